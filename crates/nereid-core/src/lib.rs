//! Nereid's server core. Frontends call [`server::InferenceServer`]; backends implement
//! [`backend::Backend`].

pub mod backend;
pub mod classification;
mod dynamic_batcher;
pub mod error;
pub mod infer_request;
pub mod infer_response;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod model_config;
pub mod model_repository_manager;
mod scheduler;
mod sequence_batcher;
pub mod server;
pub mod stats;
pub mod tensor;

pub use error::{Code, Error, Result};
pub use nereid_proto as proto;
