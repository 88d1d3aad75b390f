//! Nereid's server core. Frontends call [`server::InferenceServer`]; backends implement
//! [`backend::Backend`].

pub mod backend;
pub mod error;
pub mod infer_request;
pub mod infer_response;
pub mod model_config;
pub mod tensor;

pub use error::{Code, Error, Result};
