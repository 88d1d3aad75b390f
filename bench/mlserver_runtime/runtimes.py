"""MLServer runtimes that serve the benchmark's models the way Nereid does.

`OnnxRuntime` runs `parameters.uri` (an ONNX file) with ONNX Runtime's CPU provider and default
session options, as Nereid's onnxruntime backend does; `Identity` returns its input, like the
Python-backend identity model. bench/suite.py writes the model-settings.json files that name them.
"""

import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings)
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        values = self.session.run(self.output_names, feed)
        outputs = [NumpyCodec.encode_output(n, v) for n, v in zip(self.output_names, values)]
        return InferenceResponse(model_name=self.name, outputs=outputs)


class Identity(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [NumpyCodec.encode_output(f"OUTPUT{n}", NumpyCodec.decode_input(i))
                   for n, i in enumerate(payload.inputs)]
        return InferenceResponse(model_name=self.name, outputs=outputs)
