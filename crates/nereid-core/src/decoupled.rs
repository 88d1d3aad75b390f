//! Decoupled models (`model_transaction_policy { decoupled: true }`) answer a request with any
//! number of responses and then a final flag. The backend sends them through the request's
//! [`ResponseSender`] (Triton's response factory); whoever submitted the request reads them from
//! the [`ResponseStream`] that [`crate::model::Model::submit_stream`] returns.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::infer_request::{InferRequest, Parameters, RequestedOutput};
use crate::infer_response::InferResponse;
use crate::model::{Pending, ResponseBuilder};
use crate::tensor::Tensor;

/// One item of a request's response stream: a response (or an error), a final flag, or both.
#[derive(Debug)]
pub struct StreamItem {
    /// `None` for a final flag sent without a response.
    pub response: Option<Result<InferResponse>>,
    pub is_final: bool,
}

/// Sends a decoupled request's responses; clones send into the same stream.
#[derive(Clone)]
pub struct ResponseSender(Arc<SenderState>);

struct SenderState {
    tx: mpsc::UnboundedSender<StreamItem>,
    builder: Arc<ResponseBuilder>,
    id: String,
    requested: Vec<RequestedOutput>,
    closed: AtomicBool,
}

impl ResponseSender {
    pub(crate) fn new(
        builder: Arc<ResponseBuilder>,
        request: &InferRequest,
    ) -> (ResponseSender, mpsc::UnboundedReceiver<StreamItem>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = SenderState {
            tx,
            builder,
            id: request.id.clone(),
            requested: request.requested_outputs.clone(),
            closed: AtomicBool::new(false),
        };
        (ResponseSender(Arc::new(state)), rx)
    }

    /// Sends a response (its outputs or an error); with `is_final`, the last one.
    pub fn send(&self, outputs: Result<Vec<Tensor>>, parameters: Parameters, is_final: bool) -> Result<()> {
        let s = &self.0;
        let response = outputs.and_then(|o| s.builder.build_parts(&s.id, &s.requested, o)).map(|mut r| {
            r.parameters = parameters;
            r
        });
        self.push(StreamItem { response: Some(response), is_final })
    }

    /// Ends the stream without another response.
    pub fn finish(&self) -> Result<()> {
        self.push(StreamItem { response: None, is_final: true })
    }

    /// True once whoever reads the responses has gone.
    pub fn is_cancelled(&self) -> bool {
        self.0.tx.is_closed()
    }

    fn push(&self, item: StreamItem) -> Result<()> {
        let closed = if item.is_final {
            self.0.closed.swap(true, Ordering::AcqRel)
        } else {
            self.0.closed.load(Ordering::Acquire)
        };
        if closed {
            return Err(Error::internal("the response sender has already sent its final response"));
        }
        // A reader that has gone is not the sender's error: the responses are dropped.
        let _ = self.0.tx.send(item);
        Ok(())
    }
}

impl fmt::Debug for ResponseSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSender").field("request_id", &self.0.id).finish_non_exhaustive()
    }
}

/// A submitted request's responses. A model that is not decoupled yields its one response.
pub struct ResponseStream(Source);

enum Source {
    Single(Option<Pending>),
    /// The pending execution tells what went wrong when the senders close without a final.
    Decoupled(mpsc::UnboundedReceiver<StreamItem>, Option<Pending>),
}

impl ResponseStream {
    pub(crate) fn single(pending: Pending) -> Self {
        ResponseStream(Source::Single(Some(pending)))
    }

    pub(crate) fn decoupled(rx: mpsc::UnboundedReceiver<StreamItem>, pending: Pending) -> Self {
        ResponseStream(Source::Decoupled(rx, Some(pending)))
    }

    /// The next item; `None` after the final one.
    pub async fn next(&mut self) -> Option<StreamItem> {
        match &mut self.0 {
            Source::Single(pending) => Some(single_final(pending.take()?.await)),
            Source::Decoupled(rx, pending) => {
                let item = rx.recv().await;
                closing(item, pending)?.await_final().await
            }
        }
    }

    /// [`Self::next`] for threads outside the async runtime.
    pub fn blocking_next(&mut self) -> Option<StreamItem> {
        match &mut self.0 {
            Source::Single(pending) => Some(single_final(pending.take()?.wait())),
            Source::Decoupled(rx, pending) => {
                let item = rx.blocking_recv();
                closing(item, pending)?.wait_final()
            }
        }
    }
}

/// What a decoupled stream yields next: an item it has, or the final error its execution ended
/// with when every sender closed without a final response.
enum Next {
    Item(StreamItem),
    Execution(Pending),
}

fn closing(item: Option<StreamItem>, pending: &mut Option<Pending>) -> Option<Next> {
    match item {
        Some(item) => {
            if item.is_final {
                pending.take();
            }
            Some(Next::Item(item))
        }
        None => pending.take().map(Next::Execution),
    }
}

impl Next {
    async fn await_final(self) -> Option<StreamItem> {
        match self {
            Next::Item(item) => Some(item),
            Next::Execution(pending) => Some(missing_final(pending.await)),
        }
    }

    fn wait_final(self) -> Option<StreamItem> {
        match self {
            Next::Item(item) => Some(item),
            Next::Execution(pending) => Some(missing_final(pending.wait())),
        }
    }
}

fn single_final(response: Result<InferResponse>) -> StreamItem {
    StreamItem { response: Some(response), is_final: true }
}

fn missing_final(execution: Result<InferResponse>) -> StreamItem {
    let error = execution.err().unwrap_or_else(|| Error::internal("the model sent no final response"));
    StreamItem { response: Some(Err(error)), is_final: true }
}
