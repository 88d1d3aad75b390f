//! A model instance: one stub process, kept running. A stub that dies fails only what it had in
//! flight; it is started again at once (or by the next execution, if that start failed), and
//! the model reports not ready meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nereid_core::backend::{BackendInstance, ExecTimer, InstanceSpec};
use nereid_core::infer_request::InferRequest;
use nereid_core::tensor::Tensor;
use nereid_core::{Error, Result};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::model::ModelContext;
use crate::stub::{Inflight, Stub};
use crate::wire;

/// Decoupled requests in flight, across all stubs.
static KEYS: AtomicU64 = AtomicU64::new(1);

pub struct Supervisor {
    context: Arc<ModelContext>,
    spec: InstanceSpec,
    stub: Mutex<Option<Arc<Stub>>>,
    up: AtomicBool,
    closing: AtomicBool,
}

impl Supervisor {
    /// Starts the instance's first stub; a failure here fails the model's load.
    pub fn start(context: Arc<ModelContext>, spec: InstanceSpec) -> Result<Arc<Supervisor>> {
        let supervisor = Arc::new(Supervisor {
            context,
            spec,
            stub: Mutex::new(None),
            up: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let stub = supervisor.spawn_stub()?;
        *supervisor.stub.lock() = Some(stub);
        supervisor.up.store(true, Ordering::Release);
        Ok(supervisor)
    }

    fn spawn_stub(self: &Arc<Self>) -> Result<Arc<Stub>> {
        let watcher = Arc::downgrade(self);
        let on_exit = Box::new(move |dead: &Arc<Stub>| {
            if let Some(supervisor) = watcher.upgrade() {
                supervisor.stub_exited(dead);
            }
        });
        let stub = Stub::launch(&self.context, &self.spec.name, crate::services::serve, on_exit)?;
        let message = json!({
            "op": "initialize",
            "model": self.context.model_message(),
            "args": self.context.initialize_args(&self.spec),
        });
        match stub.request(&message, None).and_then(reply_error) {
            Ok(reply) => {
                stub.has_is_ready.store(reply["has_is_ready"].as_bool().unwrap_or(false), Ordering::Release);
                Ok(stub)
            }
            Err(e) => {
                stub.kill();
                Err(Error::internal(format!("Failed to initialize Python stub for '{}': {}", self.spec.name, e.message)))
            }
        }
    }

    /// The stub's reader saw it go: start another unless it was replaced or is being closed.
    fn stub_exited(self: &Arc<Self>, dead: &Arc<Stub>) {
        let mut slot = self.stub.lock();
        if !slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            return;
        }
        self.up.store(false, Ordering::Release);
        *slot = None;
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        log::warn!("{}; restarting it", dead.unhealthy().message);
        let started = Instant::now();
        match self.spawn_stub() {
            Ok(stub) => {
                *slot = Some(stub);
                self.up.store(true, Ordering::Release);
                log::info!("restarted the stub of '{}' in {} ms", self.spec.name, started.elapsed().as_millis());
            }
            Err(e) => log::error!("failed to restart the stub of '{}': {}", self.spec.name, e.message),
        }
    }

    /// The live stub, started now if the last one died and was not replaced yet.
    fn current(self: &Arc<Self>) -> Result<Arc<Stub>> {
        let mut slot = self.stub.lock();
        if let Some(stub) = slot.as_ref().filter(|s| s.is_alive()) {
            return Ok(stub.clone());
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::unavailable("the model is unloading"));
        }
        let stub = self.spawn_stub()?;
        *slot = Some(stub.clone());
        self.up.store(true, Ordering::Release);
        Ok(stub)
    }

    pub fn is_ready(&self, timeout: Duration) -> bool {
        // A restart holds the slot for as long as a stub takes to start: a readiness check
        // answers "not ready" at once instead of waiting for it.
        let slot = self.stub.try_lock_for(Duration::from_millis(10));
        let Some(stub) = slot.and_then(|s| s.clone()).filter(|_| self.up.load(Ordering::Acquire)) else {
            return false;
        };
        if !stub.has_is_ready.load(Ordering::Acquire) {
            return stub.is_alive();
        }
        let reply = stub.side.call(json!({"op": "is_ready"}), timeout);
        reply.is_ok_and(|r| r["ready"].as_bool() == Some(true))
    }

    /// Unload: runs `finalize` and reaps the stub; nothing restarts it afterwards.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.up.store(false, Ordering::Release);
        let stub = self.stub.lock().take();
        if let Some(stub) = stub {
            stub.finalize(self.context.settings.stub_timeout);
        }
    }

    fn execute(self: &Arc<Self>, requests: &[InferRequest], timer: &mut ExecTimer) -> Vec<Result<Vec<Tensor>>> {
        let failed = |e: Error| {
            let e = Error::new(
                e.code,
                format!("Failed to process the request(s) for model instance '{}', message: {}", self.spec.name, e.message),
            );
            requests.iter().map(|_| Err(e.clone())).collect()
        };
        let stub = match self.current() {
            Ok(stub) => stub,
            Err(e) => return failed(e),
        };
        let decoupled = self.context.decoupled;
        let mut wire_requests = Vec::with_capacity(requests.len());
        let mut blocks = Vec::new();
        let mut keys = Vec::new();
        for request in requests {
            let (mut wire, request_blocks) = match wire::request(&stub.transfer, request, &self.context.outputs) {
                Ok(encoded) => encoded,
                Err(e) => {
                    forget(&stub, &keys);
                    return failed(e);
                }
            };
            match (decoupled, &request.response_sender) {
                (true, Some(sender)) => {
                    // Registered before the stub can send anything for it.
                    let key = KEYS.fetch_add(1, Ordering::Relaxed);
                    let inflight =
                        Inflight { sender: sender.clone(), inputs: request.inputs.clone(), _blocks: request_blocks };
                    stub.requests.lock().insert(key, inflight);
                    wire["key"] = key.into();
                    keys.push(key);
                }
                _ => blocks.extend(request_blocks),
            }
            wire_requests.push(wire);
        }
        let message = json!({"op": "execute", "free": stub.transfer.take_frees(), "requests": wire_requests});
        timer.input_done();
        let reply = stub.request(&message, self.context.settings.execute_timeout);
        timer.infer_done();
        drop(blocks);
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                forget(&stub, &keys);
                return failed(e);
            }
        };
        if decoupled {
            // Responses and errors went through the senders.
            return requests.iter().map(|_| Ok(Vec::new())).collect();
        }
        if let Some(error) = reply["error"].as_str() {
            return requests.iter().map(|_| Err(Error::internal(error))).collect();
        }
        let responses = reply["responses"].as_array().map(Vec::as_slice).unwrap_or_default();
        requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                let response = responses.get(i).ok_or_else(|| Error::internal("the stub sent too few responses"))?;
                wire::response(&stub.transfer, response, &request.inputs).map(|(tensors, _)| tensors)
            })
            .collect()
    }
}

/// Decoupled requests the stub will not answer: their senders go back to the core.
fn forget(stub: &Stub, keys: &[u64]) {
    let mut requests = stub.requests.lock();
    for key in keys {
        requests.remove(key);
    }
}

/// A control reply's `"error"` as an error.
pub fn reply_error(reply: Value) -> Result<Value> {
    match reply["error"].as_str() {
        Some(error) => Err(Error::internal(error)),
        None => Ok(reply),
    }
}

/// What the scheduler drives; the instance's stub is finalized when it is dropped.
pub struct Instance(pub Arc<Supervisor>);

impl BackendInstance for Instance {
    fn execute(&mut self, requests: &[InferRequest], timer: &mut ExecTimer) -> Vec<Result<Vec<Tensor>>> {
        self.0.execute(requests, timer)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.0.close();
    }
}
