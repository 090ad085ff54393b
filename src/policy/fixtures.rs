//! Test fixtures the policy and SLO spec tests share.

/// A Sloth `PrometheusServiceLevel` for payments/checkout with one SLO, `availability`
/// at 99.9% over checkout's request counters.
pub(crate) const SLOTH_CHECKOUT: &str = r#"apiVersion: sloth.slok.dev/v1
kind: PrometheusServiceLevel
metadata: {name: checkout, namespace: payments}
spec:
  service: checkout
  slos:
    - name: availability
      objective: 99.9
      sli:
        events:
          errorQuery: sum(rate(http_requests_total{job="checkout",code=~"5.."}[{{.window}}]))
          totalQuery: sum(rate(http_requests_total{job="checkout"}[{{.window}}]))
      alerting: {pageAlert: {disable: true}, ticketAlert: {disable: true}}
"#;
