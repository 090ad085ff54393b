//! The Prometheus client: prometheus-http-query over our own reqwest client, with
//! timeouts, tenant headers and credentials for Thanos and Mimir, and answers checked
//! strictly. Every failure becomes a [`QueryError`] whose text names the cause, since it
//! ends up in a denial or a warning.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use prometheus_http_query::response::Data;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::answer::{Answer, QueryError};
use super::cache::{CacheCollector, CacheStats, QueryCache};

/// Why a client cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse, or is not http(s).
    #[error("invalid Prometheus URL {url:?}: {cause}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        cause: String,
    },
    /// A header is not a valid `NAME=VALUE` pair.
    #[error("invalid header {0:?}: expected NAME=VALUE, e.g. X-Scope-OrgID=tenant-a")]
    Header(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot read the CA file {path}: {cause}")]
    Ca {
        /// The CA file.
        path: String,
        /// Why it cannot be used.
        cause: String,
    },
    /// The HTTP client cannot be built from the settings.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// How to reach Prometheus, Thanos or Mimir. Every field is a `serve` flag.
#[derive(Debug, Clone)]
pub struct PrometheusConfig {
    /// Base URL; `/api/v1/query` is appended (a path prefix such as `/prometheus` is kept).
    pub url: String,
    /// Extra headers on every query, e.g. `X-Scope-OrgID` for a Mimir tenant.
    pub headers: Vec<(String, String)>,
    /// Read on every call, so a rotated (projected ServiceAccount) token is picked up.
    pub bearer_token_file: Option<PathBuf>,
    /// The basic-auth user; needs `basic_auth_password_file` too.
    pub basic_auth_user: Option<String>,
    /// Read on every call, like the token.
    pub basic_auth_password_file: Option<PathBuf>,
    /// PEM CA bundle that replaces the system roots, for a private Thanos or Mimir.
    pub ca_file: Option<PathBuf>,
    /// Send `partial_response=false` (Thanos) so a missing store is an error, not a
    /// quietly smaller answer. Plain Prometheus ignores the parameter.
    pub deny_partial_response: bool,
    /// How long connecting may take, apart from the query's own timeout.
    pub connect_timeout: Duration,
    /// Upper bound on any one call, whatever the policy's timeout.
    pub max_timeout: Duration,
    /// How long a cached answer serves before it is asked again.
    pub refresh_interval: Duration,
}

impl PrometheusConfig {
    /// The settings for `url` with the `serve` flags' defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            bearer_token_file: None,
            basic_auth_user: None,
            basic_auth_password_file: None,
            ca_file: None,
            deny_partial_response: true,
            connect_timeout: Duration::from_secs(2),
            max_timeout: Duration::from_secs(25),
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// Parses `NAME=VALUE` (or `NAME: VALUE`) into a header pair.
pub fn parse_header(text: &str) -> Result<(String, String), ConfigError> {
    let (name, value) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| ConfigError::Header(text.to_string()))?;
    let (name, value) = (name.trim(), value.trim());
    if HeaderName::from_bytes(name.as_bytes()).is_err() || HeaderValue::from_str(value).is_err() {
        return Err(ConfigError::Header(text.to_string()));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Largest response body read. An SLO answer is a few hundred bytes; a proxy error
/// page is a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;

/// The live client: one per server, shared by every decision.
pub struct Prometheus {
    client: prometheus_http_query::Client,
    url: String,
    headers: HeaderMap,
    bearer_token_file: Option<PathBuf>,
    basic_auth: Option<(String, PathBuf)>,
    deny_partial_response: bool,
    max_timeout: Duration,
    cache: QueryCache,
}

impl Prometheus {
    /// A client with its own answer cache; checks the settings once, here, not per query.
    pub fn new(config: &PrometheusConfig) -> Result<Self, ConfigError> {
        let url_error = |cause: String| ConfigError::Url {
            url: config.url.clone(),
            cause,
        };
        let parsed = reqwest::Url::parse(&config.url).map_err(|e| url_error(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(url_error("the scheme must be http or https".into()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.max_timeout)
            // Proxies from the environment would silently reroute admission-time queries.
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(path) = &config.ca_file {
            let ca_error = |cause: String| ConfigError::Ca {
                path: path.display().to_string(),
                cause,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in it".into()));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let client = prometheus_http_query::Client::from(http, &config.url)
            .map_err(|e| url_error(e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let pair = format!("{name}={value}");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::Header(pair.clone()))?;
            let value = HeaderValue::from_str(value).map_err(|_| ConfigError::Header(pair))?;
            headers.append(name, value);
        }
        let basic_auth = match (&config.basic_auth_user, &config.basic_auth_password_file) {
            (Some(user), Some(file)) => Some((user.clone(), file.clone())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Client(
                    "basic auth needs both a user and a password file".into(),
                ));
            }
        };
        Ok(Self {
            client,
            url: config.url.trim_end_matches('/').to_string(),
            headers,
            bearer_token_file: config.bearer_token_file.clone(),
            basic_auth,
            deny_partial_response: config.deny_partial_response,
            max_timeout: config.max_timeout,
            cache: QueryCache::new(config.refresh_interval),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cache's counters so far.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The query counters in Prometheus' exposition format, for slo-guard's `/metrics`.
    pub fn collector(&self) -> CacheCollector {
        self.cache.collector()
    }

    /// How long a cached answer serves.
    pub fn refresh_interval(&self) -> Duration {
        self.cache.refresh_interval()
    }

    /// Forgets cached answers (for benchmarks measuring a cache miss).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Every answer from the cache, under one lock, when all are fresh there.
    pub fn cached<'a>(&self, promql: impl Iterator<Item = &'a str>) -> Option<Vec<Answer>> {
        self.cache.fresh_all(promql)
    }

    /// One query, from the cache or shared with the identical call in flight, answered
    /// within `timeout` or failed with [`QueryError::Timeout`].
    pub async fn query(
        self: &std::sync::Arc<Self>,
        promql: &str,
        timeout: Duration,
    ) -> Result<Answer, QueryError> {
        let timeout = timeout.min(self.max_timeout);
        let me = self.clone();
        let owned = promql.to_string();
        let wait = self.cache.get(
            promql,
            move || async move { me.fetch(&owned, timeout).await },
        );
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(timeout_error(timeout)),
        }
    }

    /// One query straight to Prometheus, bypassing the cache.
    pub async fn fetch(&self, promql: &str, timeout: Duration) -> Result<Answer, QueryError> {
        match tokio::time::timeout(timeout, self.send(promql, None, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(timeout_error(timeout)),
        }
    }

    /// One query evaluated at a past instant (for judging outcomes), bypassing the cache.
    pub async fn fetch_at(
        &self,
        promql: &str,
        at: chrono::DateTime<chrono::Utc>,
        timeout: Duration,
    ) -> Result<Answer, QueryError> {
        match tokio::time::timeout(timeout, self.send(promql, Some(at.timestamp()), timeout)).await
        {
            Ok(result) => result,
            Err(_) => Err(timeout_error(timeout)),
        }
    }

    async fn send(
        &self,
        promql: &str,
        at: Option<i64>,
        timeout: Duration,
    ) -> Result<Answer, QueryError> {
        // Prometheus stops evaluating at its own `timeout`, a little before ours.
        let millis = i64::try_from(timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let mut request = self.client.query(promql).timeout(millis);
        if let Some(at) = at {
            request = request.at(at);
        }
        if self.deny_partial_response {
            request = request.query("partial_response", "false");
        }
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(value) = self.authorization().await? {
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.get_raw().await.map_err(|e| self.send_error(e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(QueryError::TooLarge(MAX_BODY_BYTES));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) if error.is_timeout() => return Err(timeout_error(timeout)),
                Err(error) => {
                    return Err(QueryError::Transport(format!(
                        "response cut off after {} bytes: {}",
                        body.len(),
                        chain(&error)
                    )));
                }
            }
        }
        parse_response(status, &content_type, &body)
    }

    async fn authorization(&self) -> Result<Option<HeaderValue>, QueryError> {
        let read = |path: PathBuf| async move {
            tokio::fs::read_to_string(&path)
                .await
                .map(|text| text.trim().to_string())
                .map_err(|e| QueryError::Credentials {
                    path: path.display().to_string(),
                    cause: e.to_string(),
                })
        };
        let text = if let Some(path) = &self.bearer_token_file {
            format!("Bearer {}", read(path.clone()).await?)
        } else if let Some((user, path)) = &self.basic_auth {
            let password = read(path.clone()).await?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {encoded}")
        } else {
            return Ok(None);
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| QueryError::Credentials {
            path: "credentials".into(),
            cause: "not a valid header value".into(),
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn send_error(&self, error: prometheus_http_query::Error) -> QueryError {
        let prometheus_http_query::Error::Client(client) = &error else {
            return QueryError::Transport(error.to_string());
        };
        let Some(inner) = client.inner() else {
            return QueryError::Transport(error.to_string());
        };
        if inner.is_timeout() {
            return QueryError::Transport(format!("timed out: {}", chain(inner)));
        }
        if is_refused(inner) {
            return QueryError::Refused {
                url: self.url.clone(),
            };
        }
        if inner.is_connect() {
            return QueryError::Connect {
                url: self.url.clone(),
                cause: chain(inner),
            };
        }
        QueryError::Transport(chain(inner))
    }
}

fn timeout_error(timeout: Duration) -> QueryError {
    QueryError::Timeout {
        timeout: humantime::format_duration(timeout).to_string(),
    }
}

fn is_refused(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = current.source();
    }
    false
}

/// The error and its causes on one line; reqwest's own text is only the outermost.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// Reads an `/api/v1/query` response strictly: anything but one clean number (or an
/// empty result) is an error that says what came back.
pub fn parse_response(status: u16, content_type: &str, body: &[u8]) -> Result<Answer, QueryError> {
    let text = String::from_utf8_lossy(body);
    // Judge by the body, not only the header: proxies label JSON and HTML loosely.
    if !text.trim_start().starts_with('{') {
        if !(200..300).contains(&status) && text.trim().is_empty() {
            return Err(QueryError::Http { status });
        }
        return Err(QueryError::NotJson {
            status,
            content_type: if content_type.is_empty() {
                "(no content type)".into()
            } else {
                content_type
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            },
            snippet: snippet(&text),
        });
    }
    let envelope: Envelope = serde_json::from_str(&text).map_err(|e| {
        if (200..300).contains(&status) {
            QueryError::BadJson(e.to_string())
        } else {
            QueryError::HttpBody {
                status,
                snippet: snippet(&text),
            }
        }
    })?;
    if envelope.status == "error" {
        return Err(QueryError::Prometheus {
            status,
            error_type: envelope.error_type.unwrap_or_else(|| "unknown".into()),
            message: envelope.error.unwrap_or_default(),
        });
    }
    if envelope.status != "success" {
        return Err(QueryError::BadJson(format!(
            "status {:?}, expected \"success\"",
            envelope.status
        )));
    }
    if !(200..300).contains(&status) {
        return Err(QueryError::Http { status });
    }
    if !envelope.warnings.is_empty() {
        return Err(QueryError::Warnings(envelope.warnings.join("; ")));
    }
    let data = envelope
        .data
        .ok_or_else(|| QueryError::BadJson("success without data".into()))?;
    let data: Data =
        serde_json::from_value(data).map_err(|e| QueryError::BadJson(format!("data: {e}")))?;
    match data {
        Data::Scalar(sample) => Ok(Answer {
            value: Some(sample.value()),
        }),
        Data::Vector(series) => match series.as_slice() {
            [] => Ok(Answer { value: None }),
            [one] => Ok(Answer {
                value: Some(one.sample().value()),
            }),
            many => Err(QueryError::ManySeries(many.len())),
        },
        Data::Matrix(_) => Err(QueryError::RangeVector),
    }
}

/// What an HTML or text body says, briefly: its `<title>` if it has one.
fn snippet(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let picked = match (lower.find("<title>"), lower.find("</title>")) {
        (Some(start), Some(end)) if end > start + 7 => &text[start + 7..end],
        _ => text,
    };
    let flat: String = picked.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 60 {
        let cut: String = flat.chars().take(59).collect();
        format!("{cut}…")
    } else if flat.is_empty() {
        "(empty body)".into()
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<Answer, QueryError> {
        parse_response(200, "application/json", body.as_bytes())
    }

    #[test]
    fn reads_one_number_or_an_empty_result() {
        assert_eq!(
            ok(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1795248511.2,"0.00105"]}]}}"#
            ),
            Ok(Answer {
                value: Some(0.00105)
            })
        );
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#),
            Ok(Answer { value: None })
        );
        assert_eq!(
            ok(
                r#"{"status":"success","data":{"resultType":"scalar","result":[1795248511.2,"3"]}}"#
            ),
            Ok(Answer { value: Some(3.0) })
        );
        let nan = ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#).unwrap();
        assert!(nan.value.unwrap().is_nan());
        let inf = ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#).unwrap();
        assert_eq!(inf.value, Some(f64::INFINITY));
    }

    #[test]
    fn everything_else_is_an_error_naming_the_cause() {
        let html = parse_response(
            200,
            "text/html; charset=utf-8",
            b"<html><head><title>Sign in - Corporate SSO</title></head><body>...</body></html>",
        );
        assert_eq!(
            html.unwrap_err().to_string(),
            "HTTP 200 text/html instead of JSON: Sign in - Corporate SSO"
        );
        let bad_gateway = parse_response(502, "text/plain", b"Bad Gateway\n");
        assert_eq!(
            bad_gateway.unwrap_err().to_string(),
            "HTTP 502 text/plain instead of JSON: Bad Gateway"
        );
        assert_eq!(
            parse_response(500, "", b"").unwrap_err(),
            QueryError::Http { status: 500 }
        );
        let bad = ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"#,
        );
        assert!(matches!(bad, Err(QueryError::BadJson(_))), "{bad:?}");
        let error = parse_response(
            400,
            "application/json",
            br#"{"status":"error","errorType":"bad_data","error":"1:43: parse error: unclosed left parenthesis"}"#,
        );
        assert_eq!(
            error.unwrap_err().to_string(),
            "Prometheus error (HTTP 400, bad_data): 1:43: parse error: unclosed left parenthesis"
        );
        let warned = ok(
            r#"{"status":"success","warnings":["No StoreAPIs matched for this query"],"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#,
        );
        assert_eq!(
            warned.unwrap_err().to_string(),
            "degraded data, Prometheus warned: No StoreAPIs matched for this query"
        );
        let many = ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"code":"200"},"value":[1,"1"]},{"metric":{"code":"500"},"value":[1,"1"]}]}}"#,
        );
        assert_eq!(many.unwrap_err(), QueryError::ManySeries(2));
        let matrix = ok(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
        assert_eq!(matrix.unwrap_err(), QueryError::RangeVector);
        let strange = ok(r#"{"status":"pending"}"#);
        assert!(matches!(strange, Err(QueryError::BadJson(_))));
        assert!(matches!(
            ok(r#"{"status":"success"}"#),
            Err(QueryError::BadJson(_))
        ));
    }

    #[test]
    fn headers_parse_as_name_value() {
        assert_eq!(
            parse_header("X-Scope-OrgID=tenant-a").unwrap(),
            ("X-Scope-OrgID".to_string(), "tenant-a".to_string())
        );
        assert_eq!(
            parse_header("X-Scope-OrgID: a|b").unwrap(),
            ("X-Scope-OrgID".to_string(), "a|b".to_string())
        );
        assert!(parse_header("no separator").is_err());
        assert!(parse_header("bad name=x").is_err());
    }
}
