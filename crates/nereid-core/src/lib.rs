//! Nereid's server core. Frontends call [`server::InferenceServer`]; backends implement
//! [`backend::Backend`].

pub mod backend;
pub mod classification;
pub mod decoupled;
pub mod devices;
mod dynamic_batcher;
mod ensemble_scheduler;
pub mod error;
pub mod infer_request;
pub mod infer_response;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod model_config;
pub mod model_repository_manager;
mod model_warmup;
mod priority_queue;
mod scheduler;
mod sequence_batcher;
mod sequence_state;
pub mod server;
pub mod shared_memory_manager;
pub mod stats;
pub mod tensor;

pub use error::{Code, Error, Result};
pub use nereid_proto as proto;
