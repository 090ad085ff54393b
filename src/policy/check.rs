//! What every section's `validate` reports, and the checks several sections share.

/// A field with a bad value: the dotted path into the policy, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The dotted path into the policy (`slo.burnRate[0].short`).
    pub field: String,
    /// What is wrong with the value.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A number within `low..=high`, as budget floors and confidences are.
pub(crate) fn check_fraction(
    field: &str,
    value: f64,
    low: f64,
    high: f64,
) -> Result<(), FieldError> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value} is outside {low}..{high}"),
        ))
    }
}

/// A PromQL query: `templated` ones (the SLO's) carry `{{window}}`, the others (the
/// traffic check's) write their range.
pub(crate) fn check_query(field: &str, query: &str, templated: bool) -> Result<(), FieldError> {
    if query.trim().is_empty() {
        return Err(FieldError::new(field, "query is empty"));
    }
    if templated && !query.contains("{{window}}") {
        return Err(FieldError::new(
            field,
            "query must contain {{window}} where the range goes, e.g. rate(x[{{window}}])",
        ));
    }
    if !templated && query.contains("{{window}}") {
        return Err(FieldError::new(
            field,
            "traffic queries have no {{window}}: write the range, e.g. rate(x[5m])",
        ));
    }
    // Only these placeholders are filled in; any other would reach Prometheus verbatim
    // and fail every decision at admission time instead of here.
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(FieldError::new(field, "unclosed {{ placeholder"));
        };
        let name = after[..end].trim();
        if !matches!(name, "window" | "namespace" | "name") {
            return Err(FieldError::new(
                field,
                format!(
                    "unknown placeholder {{{{{name}}}}}: use {{{{window}}}}, {{{{namespace}}}} or {{{{name}}}}"
                ),
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}
