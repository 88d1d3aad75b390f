//! ModelStreamInfer: requests run concurrently as they arrive; their responses go back in the
//! order the requests came, as Triton writes them for non-decoupled models (decoupled models'
//! responses are written as they come, see [`crate::decoupled`]). An error is a response with
//! `error_message`, and the stream stays open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use nereid_core::server::InferenceServer;
use nereid_proto::inference::{ModelInferRequest, ModelInferResponse, ModelStreamInferResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

type Pending = JoinHandle<Result<ModelStreamInferResponse, Status>>;

/// How many responses may wait for a slow reader before reading requests pauses.
const IN_FLIGHT: usize = 256;

pub fn start(server: Arc<InferenceServer>, mut requests: Streaming<ModelInferRequest>) -> ResponseStream {
    let (tx, rx) = mpsc::channel::<Pending>(IN_FLIGHT);
    let (decoupled_tx, decoupled_rx) = mpsc::channel(IN_FLIGHT);
    tokio::spawn(async move {
        loop {
            let (pending, more) = match requests.message().await {
                Ok(Some(request)) if crate::decoupled::is_decoupled(&server, &request) => {
                    tokio::spawn(crate::decoupled::answer(&server, request, decoupled_tx.clone()));
                    continue;
                }
                Ok(Some(request)) => (tokio::spawn(answer(&server, request)), true),
                Ok(None) => break,
                // A broken read ends the stream with its status, after the responses before it.
                Err(status) => (tokio::spawn(std::future::ready(Err(status))), false),
            };
            // A failed send means the client has gone; nothing more to read for.
            if tx.send(pending).await.is_err() || !more {
                break;
            }
        }
    });
    let responses = ReceiverStream::new(rx).then(|pending| async move {
        pending.await.unwrap_or_else(|e| Err(Status::internal(format!("inference task failed: {e}"))))
    });
    Box::pin(responses.merge(ReceiverStream::new(decoupled_rx)))
}

/// Submits the request now, in stream order; the returned future waits for its response.
fn answer(
    server: &InferenceServer,
    request: ModelInferRequest,
) -> impl Future<Output = Result<ModelStreamInferResponse, Status>> + Send + 'static {
    // What the client needs to match an error to its request, kept before the request is consumed.
    let known = ModelInferResponse {
        id: request.id.clone(),
        model_name: request.model_name.clone(),
        model_version: request.model_version.clone(),
        ..Default::default()
    };
    let response = crate::infer::submit(server, request);
    async move {
        Ok(match response.await {
            Ok(mut response) => {
                // Non-decoupled models send one response, the final.
                crate::decoupled::mark_final(&mut response, true);
                ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) }
            }
            Err(e) => ModelStreamInferResponse { error_message: e.message, infer_response: Some(known) },
        })
    }
}
