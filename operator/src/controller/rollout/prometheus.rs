//! The rollback analysis's optional Prometheus source: one instant query per version
//! (`GET <url>/api/v1/query?query=...` with `$version` replaced), its first sample read as
//! the version's error rate. Bounded: a 5 s timeout per query and a 1 MiB answer cap.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::crd::PrometheusQuery;

/// Time allowed for one query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// Why a query gave no rate.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The URL with the query does not parse.
    #[error("invalid query URL: {0}")]
    Url(String),
    /// No answer within [`QUERY_TIMEOUT`].
    #[error("no answer within {} s", QUERY_TIMEOUT.as_secs())]
    Timeout,
    /// The request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// Prometheus answered with an error.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer is not what the query API returns.
    #[error("unexpected answer: {0}")]
    Answer(String),
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// The error rate in a query API answer: the first sample of a vector or a scalar, clamped to
/// 0..=1; `None` when the vector is empty.
pub fn rate_of(answer: &[u8]) -> Result<Option<f64>, PrometheusError> {
    let answer: Answer =
        serde_json::from_slice(answer).map_err(|e| PrometheusError::Answer(e.to_string()))?;
    if answer.status != "success" {
        return Err(PrometheusError::Answer(
            answer.error.unwrap_or_else(|| answer.status.clone()),
        ));
    }
    let data = answer
        .data
        .ok_or_else(|| PrometheusError::Answer("no data".into()))?;
    let value = match data.result_type.as_str() {
        "vector" => data
            .result
            .as_array()
            .and_then(|samples| samples.first())
            .map(|sample| sample["value"][1].clone()),
        "scalar" => Some(data.result[1].clone()),
        other => {
            return Err(PrometheusError::Answer(format!(
                "result type {other}, expected vector or scalar"
            )));
        }
    };
    let Some(value) = value else {
        return Ok(None);
    };
    let rate: f64 = value
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| PrometheusError::Answer(format!("sample value {value} is not a number")))?;
    Ok(rate.is_finite().then(|| rate.clamp(0.0, 1.0)))
}

/// The query URL of `version`.
pub fn query_url(query: &PrometheusQuery, version: &str) -> String {
    let promql = query.query.replace("$version", version);
    let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
    format!(
        "{}/api/v1/query?query={encoded}",
        query.url.trim_end_matches('/')
    )
}

/// Each version's error rate by `query` (versions whose query returns nothing are left out).
pub async fn rates(
    query: &PrometheusQuery,
    versions: &[String],
) -> Result<BTreeMap<String, f64>, PrometheusError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| PrometheusError::Request(format!("TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut out = BTreeMap::new();
    for version in versions {
        let uri: hyper::Uri = query_url(query, version)
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| PrometheusError::Url(e.to_string()))?;
        let fetch = async {
            let response = client
                .get(uri)
                .await
                .map_err(|e| PrometheusError::Request(e.to_string()))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| PrometheusError::Request(e.to_string()))?
                .to_bytes();
            if status != 200 {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return Err(PrometheusError::Status { status, body: text });
            }
            rate_of(&body)
        };
        match tokio::time::timeout(QUERY_TIMEOUT, fetch).await {
            Err(_) => return Err(PrometheusError::Timeout),
            Ok(Err(error)) => return Err(error),
            Ok(Ok(Some(rate))) => {
                out.insert(version.clone(), rate);
            }
            Ok(Ok(None)) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_rates() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1750000000.1,"0.25"]}]}}"#;
        assert_eq!(rate_of(vector).unwrap(), Some(0.25));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(rate_of(empty).unwrap(), None);
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(rate_of(scalar).unwrap(), Some(1.0), "clamped");
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"NaN"]}]}}"#;
        assert_eq!(rate_of(nan).unwrap(), None);
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(
            rate_of(error)
                .unwrap_err()
                .to_string()
                .contains("parse error")
        );
        assert!(rate_of(b"<html>").is_err());
    }

    #[test]
    fn the_version_goes_into_the_query() {
        let q = PrometheusQuery {
            url: "http://prometheus:9090/".into(),
            query: r#"rate(x{version="$version"}[1m])"#.into(),
        };
        assert_eq!(
            query_url(&q, "v2"),
            "http://prometheus:9090/api/v1/query?query=rate%28x%7Bversion%3D%22v2%22%7D%5B1m%5D%29"
        );
    }
}
