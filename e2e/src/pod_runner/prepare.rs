//! Everything between "the node accepted a pod" and "exec the process": resolve the image,
//! read the probe, fetch the referenced Secrets/ConfigMaps and tokens, materialise the volumes,
//! write the in-pod kubeconfig, and build the launch plan. Each failure carries the waiting
//! reason a kubelet would report (`ErrImagePull`, `CreateContainerConfigError`).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

use super::config::{PodPaths, RunnerConfig};
use super::launch::{self, LaunchPlan, PlanInputs, PodPlacement};
use super::probe::{self, ProbeSpec};
use super::{fetch, image, refs, volumes};

/// Why a container cannot start yet.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The image has no mapping.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// The container spec cannot be turned into a process.
    #[error(transparent)]
    Launch(#[from] launch::LaunchError),
    /// The readiness probe is invalid.
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    /// Reading referenced objects or writing the kubeconfig failed.
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    /// A volume cannot be materialised.
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
}

impl PrepareError {
    /// The container's waiting reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Image(_) => "ErrImagePull",
            _ => "CreateContainerConfigError",
        }
    }

    /// Whether this is an image problem (retried less often, like an image pull back-off).
    pub fn is_image_error(&self) -> bool {
        matches!(self, Self::Image(_))
    }
}

/// What preparing needs.
pub struct Inputs<'a> {
    /// API client.
    pub client: &'a kube::Client,
    /// Runner settings (image map, probe period cap).
    pub config: &'a RunnerConfig,
    /// The pod.
    pub pod: &'a Pod,
    /// The pod's files.
    pub paths: &'a PodPaths,
    /// Pod and node addresses.
    pub placement: PodPlacement<'a>,
    /// Apiserver URL for the in-pod kubeconfig.
    pub apiserver_url: &'a str,
    /// Environment before the container's own.
    pub base_env: &'a [(String, String)],
}

/// The outcome: the mapped program (known as soon as the image resolves) and either the
/// launch plan with the readiness probe or the reason it cannot start.
pub struct Prepared {
    /// The image's program, if it resolved.
    pub program: Option<PathBuf>,
    /// Launch plan and probe, or the error.
    pub result: Result<(LaunchPlan, Option<ProbeSpec>), PrepareError>,
}

/// Prepares the pod's first container.
pub async fn prepare(inputs: &Inputs<'_>) -> Prepared {
    let container = match launch::first_container(inputs.pod) {
        Ok(c) => c,
        Err(e) => {
            return Prepared {
                program: None,
                result: Err(e.into()),
            };
        }
    };
    let image = container.image.as_deref().unwrap_or_default();
    let program = match inputs.config.images.resolve(image) {
        Ok(p) => p.to_path_buf(),
        Err(e) => {
            return Prepared {
                program: None,
                result: Err(e.into()),
            };
        }
    };
    let result = plan(inputs, &program).await;
    Prepared {
        program: Some(program),
        result,
    }
}

async fn plan(
    inputs: &Inputs<'_>,
    program: &std::path::Path,
) -> Result<(LaunchPlan, Option<ProbeSpec>), PrepareError> {
    let pod = inputs.pod;
    let container = launch::first_container(pod)?;
    let probe_spec = probe::readiness_spec(container, inputs.config.max_probe_period)?;
    let (sources, tokens) = fetch::fetch(inputs.client, pod, &refs::references(pod)).await?;
    let volumes_dir = inputs.paths.volumes();
    let plans = volumes::plan_volumes(pod, &sources, &tokens, &inputs.placement)?;
    volumes::materialise(&volumes_dir, &plans)?;
    let mounts = volumes::mount_rewrites(pod, &volumes_dir, &plans)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut base_env = inputs.base_env.to_vec();
    if let Some(path) =
        fetch::write_in_pod_kubeconfig(&inputs.paths.dir, &mounts, inputs.apiserver_url, namespace)?
    {
        base_env.push(("KUBECONFIG".into(), path.to_string_lossy().into_owned()));
    }
    let plan = launch::plan(
        pod,
        &PlanInputs {
            program,
            placement: inputs.placement,
            sources: &sources,
            mounts: &mounts,
            pod_dir: &inputs.paths.dir,
            base_env: &base_env,
        },
    )?;
    Ok((plan, probe_spec))
}
