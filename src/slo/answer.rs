//! What one Prometheus query gives: an [`Answer`], or the [`QueryError`] that says why
//! not. Shared by the client, its cache, canned answers and the query plans.

/// A Prometheus answer slo-guard reads: one number, or an empty result.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `None` for an empty result. NaN and ±Inf are kept as they came; the rules read
    /// them as "no data".
    pub value: Option<f64>,
}

/// Why a query gave no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Nothing listens at the URL.
    #[error("connection refused by {url}")]
    Refused {
        /// Prometheus's URL.
        url: String,
    },
    /// The connection failed otherwise (DNS, TLS, reset).
    #[error("cannot connect to {url}: {cause}")]
    Connect {
        /// Prometheus's URL.
        url: String,
        /// The client's error.
        cause: String,
    },
    /// No answer within the policy's `prometheus.timeout`.
    #[error("no answer within the {timeout} timeout")]
    Timeout {
        /// The timeout, as written.
        timeout: String,
    },
    /// Prometheus answered with its own error (a bad query, an overload).
    #[error("Prometheus error (HTTP {status}, {error_type}): {message}")]
    Prometheus {
        /// The HTTP status.
        status: u16,
        /// Prometheus's `errorType`.
        error_type: String,
        /// Prometheus's `error`.
        message: String,
    },
    /// A failed HTTP status with no body.
    #[error("HTTP {status} without a Prometheus error body")]
    Http {
        /// The HTTP status.
        status: u16,
    },
    /// A failed HTTP status with a body that is not Prometheus's (a proxy's page).
    #[error("HTTP {status}: {snippet}")]
    HttpBody {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        snippet: String,
    },
    /// A body that is not JSON.
    #[error("HTTP {status} {content_type} instead of JSON: {snippet}")]
    NotJson {
        /// The HTTP status.
        status: u16,
        /// The `Content-Type`.
        content_type: String,
        /// The start of the body.
        snippet: String,
    },
    /// JSON that is not a Prometheus query response.
    #[error("bad JSON from Prometheus: {0}")]
    BadJson(String),
    /// A partial answer (Thanos or Mimir warnings): not trusted.
    #[error("degraded data, Prometheus warned: {0}")]
    Warnings(String),
    /// More than one series.
    #[error("query returned {0} series; an SLO query must return one (aggregate it with sum)")]
    ManySeries(usize),
    /// A range vector.
    #[error("query returned a range vector; an SLO query must be an instant vector or scalar")]
    RangeVector,
    /// A body above the size slo-guard reads.
    #[error("response body above {0} bytes")]
    TooLarge(usize),
    /// The HTTP client failed mid-exchange.
    #[error("{0}")]
    Transport(String),
    /// The bearer token or basic-auth password file could not be read.
    #[error("cannot read {path}: {cause}")]
    Credentials {
        /// The file.
        path: String,
        /// The I/O error.
        cause: String,
    },
    /// slo-guard's own failure (a shared query whose task died).
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    /// A short, stable name for the metrics label `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            QueryError::Refused { .. } => "refused",
            QueryError::Connect { .. } => "connect",
            QueryError::Timeout { .. } => "timeout",
            QueryError::Prometheus { .. } => "prometheus_error",
            QueryError::Http { .. } | QueryError::HttpBody { .. } => "http_status",
            QueryError::NotJson { .. } | QueryError::BadJson(_) => "bad_response",
            QueryError::Warnings(_) => "partial_response",
            QueryError::ManySeries(_) | QueryError::RangeVector => "bad_query",
            QueryError::TooLarge(_) => "too_large",
            QueryError::Transport(_) => "transport",
            QueryError::Credentials { .. } => "credentials",
            QueryError::Internal(_) => "internal",
        }
    }
}
