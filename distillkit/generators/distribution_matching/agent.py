"""The agent: a random network redrawn in place every iteration, and the probe that reads its
embeddings and norm-layer outputs."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from distillkit.errors import UserError
from distillkit.generators.distribution_matching.losses import style_statistics
from distillkit.training import can_compile

# Norm layers whose outputs carry the style statistics (read through forward hooks).
STYLE_NORMS = (nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


# ---------------------------------------------------------------------------------------------
# Pieces of one matching run
# ---------------------------------------------------------------------------------------------

def reinitialise(model: nn.Module) -> None:
    """Draw fresh weights in place with every module's own ``reset_parameters`` (PyTorch's default init)."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def parameters_not_reinitialised(model: nn.Module) -> list[str]:
    """Names of parameters that no module with ``reset_parameters`` owns (they would never be redrawn)."""
    covered = {id(p) for m in model.modules() if hasattr(m, "reset_parameters") for p in m.parameters(recurse=False)}
    return [name for name, p in model.named_parameters() if id(p) not in covered]


class AgentProbe:
    """``probe(x)`` → the agent's embeddings and the outputs of its norm layers (the layers the style
    terms read; none when the style terms are off). ``probe.statistics(maps, groups)`` turns those
    outputs into per-class style statistics (``groups`` classes of equal batches in ``x``).

    When the norm layers are direct children of a sequential ``features`` (the ConvNet family) the
    probe walks the layers itself, so the whole pass can go through ``torch.compile``: its fused
    norm / activation / pooling kernels roughly halve the real-image pass on a CPU. Other agents
    are read through forward hooks, eagerly (hooks do not run inside a compiled graph). Without a
    C++ compiler on a CPU-only host compiling falls back to eager. The statistics stay outside the
    compiled graph: in torch 2.15 a CPU bf16 graph holding the Gram matmuls returns NaN embeddings.
    """

    def __init__(self, agent: nn.Module, moments: bool = False, correlation: bool = False,
                 after_relu: bool = False, compile: bool = False):
        self.agent, self.after_relu = agent, after_relu
        self.moments, self.correlation = moments, correlation
        style = moments or correlation
        self.layers = [m for m in agent.modules() if isinstance(m, STYLE_NORMS)] if style else []
        features = getattr(agent, "features", None)
        self.walks = not style or (isinstance(features, nn.Sequential)
                                   and all(any(m is c for c in features) for m in self.layers))
        if not self.walks:
            for layer in self.layers:
                layer.register_forward_hook(self._record)
        self._recorded: list[torch.Tensor] = []
        self.compiled = compile and self.walks and can_compile(next(agent.parameters()).device, "dm: generator")
        self._pass = torch.compile(self._walk, dynamic=False) if self.compiled else self._walk

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.walks:
            return self._pass(x)
        self._recorded = []
        embeddings = self.agent.embed(x)
        maps, self._recorded = self._recorded, []
        return embeddings, maps

    def _walk(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.layers:
            return self.agent.embed(x), []
        maps = []
        for layer in self.agent.features:
            x = layer(x)
            if isinstance(layer, STYLE_NORMS):
                maps.append(x)
        return x.flatten(1), maps

    def _record(self, module, inputs, output) -> None:
        self._recorded.append(output)

    def statistics(self, maps: list[torch.Tensor], groups: int) -> list[dict]:
        """Per-class style statistics of each norm layer's output, in fp32."""
        stats = []
        for output in maps:
            if output.ndim != 4:
                raise UserError(f"style terms need 4-D feature maps at norm layers; got {tuple(output.shape)} "
                                "(switch the style terms off or pick a convolutional agent)")
            features = F.relu(output) if self.after_relu else output
            with torch.autocast(output.device.type, enabled=False):
                stats.append(style_statistics(features, groups, self.moments, self.correlation))
        return stats

