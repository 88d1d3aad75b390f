//! Placeholder: written by the model-config work (config.pbtxt parsing, defaults, JSON).
