//! An inference response as the core hands it back to a frontend.

use crate::infer_request::Parameters;
use crate::tensor::Tensor;

#[derive(Clone, Debug, Default)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: i64,
    pub id: String,
    pub outputs: Vec<Tensor>,
    pub parameters: Parameters,
}
