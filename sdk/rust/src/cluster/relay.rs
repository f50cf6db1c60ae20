//! Reaching node-agents from outside the cluster network: through the API server's pod proxy
//! (`/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/...`), with the same TLS and credentials as
//! every other Kubernetes call of this `Cluster` (kube's own layers: base URI, auth with token
//! refresh, extra headers; its TLS connector with the kubeconfig's CA and client certificate).
//!
//! The API server authenticates the user, checks `pods/proxy` on the agent's pod, removes
//! `Authorization` and forwards the rest; the agent then checks the user's token, sent in
//! `X-Microsandbox-Authorization`, against RBAC (`create` on `sandboxes/exec`).

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use microsandbox_client::{BoxError, Relay, ReqBody};
use std::future::Future;
use std::pin::Pin;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// The API server as a relay to node-agents.
pub struct ApiServerRelay {
    service: BoxCloneSyncService<Request<ReqBody>, Response<Incoming>, BoxError>,
}

impl ApiServerRelay {
    /// A relay speaking to the API server of `config`.
    pub fn new(config: &kube::Config) -> Result<Self, kube::Error> {
        let https = config.openssl_https_connector()?;
        let client: Client<_, ReqBody> = Client::builder(TokioExecutor::new()).build(https);
        let service = ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer()?)
            .layer(config.extra_headers_layer()?)
            .service(client.map_err(BoxError::from))
            .map_err(BoxError::from);
        Ok(Self {
            service: BoxCloneSyncService::new(service),
        })
    }
}

impl Relay for ApiServerRelay {
    fn send(
        &self,
        req: Request<ReqBody>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>> {
        Box::pin(self.service.clone().oneshot(req))
    }
}
