"""SVG's recurrent cells (Denton & Fergus 2018, §2–3): the deterministic frame predictor
``f`` and the Gaussian LSTMs of the posterior ``q(z_t | x_{1:t})`` and learned prior
``p(z_t | x_{1:t-1})``.

Both are "linear embedding → stacked LSTM layers → linear output" exactly as in the
original code (``lstm`` and ``gaussian_lstm``): the predictor ends in ``tanh`` (frame codes
live in the encoder's tanh range); the Gaussian LSTM has two linear heads for μ and
log σ² (Eq. 3 of SVG: ``z_t ~ N(μ_φ(h_t), σ_φ(h_t))``).

The recurrent state ``(h, c)``, each ``[layers, B, hidden]``, is passed in and returned
(no per-batch state inside the module). A call processes a whole sequence ``[B, S, ·]``:
``S = 1`` is one step, and feeding a sequence equals feeding its steps one by one.
The cells compute in float32 with autocast off, so states stay float32 through long
rollouts; their cost is negligible next to the convolutions.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]  # [h, c], each [layers, B, hidden], float32


class _StackedLSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"an LSTM needs at least one layer, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.embed = nn.Linear(input_size, hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers, batch_first=True)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> LSTMState:
        """The zero state SVG starts every sequence from."""
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros.clone()

    def _run(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected input [B, S, {self.input_size}], got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            e = self.embed(x.float())                                   # [B, S, hidden]
            out, (h, c) = self.lstm(e, (state[0].float(), state[1].float()))
        # The shapes stated again: under torch.compile on CUDA, torch before 2.13 records the
        # LSTM decomposition's h_n/c_n as [layers, 1, B, hidden] (pytorch/pytorch#185716), and a
        # rollout that feeds the state back in then fails; at run time this reshape is a no-op.
        shape = (self.num_layers, e.shape[0], self.hidden_size)
        return out, (h.reshape(shape), c.reshape(shape))


class LSTM(_StackedLSTM):
    """SVG's frame predictor: ``x[B, S, in] -> (tanh(W·LSTM(embed(x)))[B, S, out], state)``."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__(input_size, hidden_size, num_layers)
        self.output = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        out, state = self._run(x, state)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.tanh(self.output(out)), state


class GaussianLSTM(_StackedLSTM):
    """SVG's posterior/prior network: ``x[B, S, in] -> (μ[B, S, out], log σ²[B, S, out], state)``."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__(input_size, hidden_size, num_layers)
        self.mu_net = nn.Linear(hidden_size, output_size)
        self.logvar_net = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, state: LSTMState) -> tuple[Tensor, Tensor, LSTMState]:
        out, state = self._run(x, state)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.mu_net(out), self.logvar_net(out), state
