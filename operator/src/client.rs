//! The operator's Kubernetes client: built from the usual kubeconfig / in-cluster
//! configuration, with a client-side rate limit (`--kube-qps`, `--kube-burst`, a token bucket
//! in the client's tower stack, like client-go's), and the startup check that the
//! `switchboard.dev` CRDs are installed.
//!
//! The limit applies to request starts: a watch counts once, when it is opened. kube's client
//! drives its service from one buffer worker, so a request waiting for a token delays the ones
//! queued behind it — exactly a rate limit — and the queue in front of it is kube's bounded
//! buffer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// API resources the operator needs (plural names in `switchboard.dev/v1alpha1`).
pub const REQUIRED_RESOURCES: [&str; 3] = ["signalingclusters", "roomshards", "protocolrollouts"];

/// Failures building the client or checking the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("no Kubernetes configuration: {0}")]
    Config(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("building the Kubernetes client: {0}")]
    Build(#[source] kube::Error),
    /// An API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    /// The CRDs are not (all) installed.
    #[error("CRDs not installed: kubectl apply -f crds/ (missing switchboard.dev/v1alpha1 {})", .0.join(", "))]
    CrdsMissing(Vec<String>),
}

/// A token bucket: `qps` tokens per second, at most `burst` saved up. Reservations may drive
/// the balance below zero; the caller then waits until its token would have arrived.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket (`burst` is at least 1).
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token at `now`; returns how long the caller must wait before using it.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.qps).min(self.burst) - 1.0;
        *last = now.max(*last);
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.qps)
        }
    }
}

/// Tower layer applying a [`TokenBucket`] to every request.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<TokenBucket>,
}

impl RateLimitLayer {
    /// `qps` requests per second with bursts of `burst`.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self {
            bucket: Arc::new(TokenBucket::new(qps, burst)),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            bucket: Arc::clone(&self.bucket),
            sleep: None,
            permitted: false,
        }
    }
}

/// The service of [`RateLimitLayer`]: not ready until a token is available.
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<TokenBucket>,
    sleep: Option<Pin<Box<Sleep>>>,
    permitted: bool,
}

impl<S, R> Service<R> for RateLimit<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            if self.sleep.is_none() {
                let wait = self.bucket.reserve(Instant::now());
                if wait.is_zero() {
                    self.permitted = true;
                } else {
                    self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
                self.permitted = true;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.permitted = false;
        self.inner.call(request)
    }
}

/// Builds a client from the inferred configuration (`KUBECONFIG`, `~/.kube/config` or the
/// in-cluster service account), limited to `qps` requests per second with bursts of `burst`
/// (`qps <= 0`: unlimited).
pub async fn build_client(qps: f32, burst: u32) -> Result<Client, ClientError> {
    let config = Config::infer().await?;
    let builder = ClientBuilder::try_from(config).map_err(ClientError::Build)?;
    if qps > 0.0 {
        Ok(builder
            .with_layer(&RateLimitLayer::new(f64::from(qps), burst))
            .build())
    } else {
        Ok(builder.build())
    }
}

/// Fails with [`ClientError::CrdsMissing`] unless every resource in [`REQUIRED_RESOURCES`] is
/// served.
pub async fn check_crds(client: &Client) -> Result<(), ClientError> {
    let group = format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION);
    let served: Vec<String> = match client.list_api_group_resources(&group).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(error) => return Err(ClientError::Kube(error)),
    };
    let missing: Vec<String> = REQUIRED_RESOURCES
        .iter()
        .filter(|r| !served.iter().any(|s| s == *r))
        .map(|r| (*r).to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ClientError::CrdsMissing(missing))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tower::ServiceExt;

    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(t0), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(t0), Duration::from_millis(100));
        // 0.5 s later five tokens arrived, one was owed: four remain usable … capped at 3.
        let later = t0 + Duration::from_millis(500);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert!(bucket.reserve(later) > Duration::ZERO);
        // A clock that goes backwards does not mint tokens.
        assert!(bucket.reserve(t0) > Duration::ZERO);
    }

    #[derive(Clone)]
    struct Counter(Arc<AtomicU32>);

    impl Service<()> for Counter {
        type Response = ();
        type Error = Infallible;
        type Future = std::future::Ready<Result<(), Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: ()) -> Self::Future {
            self.0.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_spaces_requests_beyond_the_burst() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut service = RateLimitLayer::new(5.0, 2).layer(Counter(Arc::clone(&calls)));
        let start = Instant::now();
        for _ in 0..7 {
            service.ready().await.unwrap().call(()).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::Relaxed), 7);
        // Two free, five paced at 200 ms.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn the_missing_crd_message_says_what_to_do() {
        let error = ClientError::CrdsMissing(vec!["roomshards".into()]);
        assert_eq!(
            error.to_string(),
            "CRDs not installed: kubectl apply -f crds/ (missing switchboard.dev/v1alpha1 roomshards)"
        );
    }
}
