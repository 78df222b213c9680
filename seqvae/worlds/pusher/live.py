"""How far a live prediction of the pushing world is from the truth
(:class:`ObjectPositionCheck`, the :class:`seqvae.control.live.PredictionCheck` of world
``pusher``): each object is located by its colour in the predicted frame
(:func:`~seqvae.worlds.pusher.tracking.locate_color`, from where it was last found) and
compared with the simulator's position, in table units (the table is 2 wide). The same
tracker on the true frame gives its own error, the floor of the figure."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from seqvae.worlds.pusher.tracking import locate_color


def _hex(color: Tensor) -> str:
    r, g, b = (int(round(float(c) * 255)) for c in color.clamp(0, 1))
    return f"#{r:02x}{g:02x}{b:02x}"


class ObjectPositionCheck:
    """Per object: where the colour tracker finds it in the predicted frame, and its distance
    to the simulator's position (``error``, the mean over objects, is the headline).

    While the model follows the truth, each search starts from the object's true position
    one step before (the model saw that frame); while it dreams, from where the tracker last
    found the object in the predictions, so an object the model has lost is not found for
    it by the truth.
    """

    def reset(self, env: Any) -> None:
        state = env.state
        self.active = [k for k in range(state.object_pos.shape[1]) if bool(state.object_active[0, k])]
        self.true_before = state.object_pos[0].float().clone()        # [K, 2]
        self.found = self.true_before.clone()

    def __call__(self, env: Any, predicted: Tensor, following: bool) -> dict[str, Any]:
        state = env.state
        true = state.object_pos[0].float()
        truth = env.observe().float() / 255
        objects = []
        for k in self.active:
            color = state.object_color[0, k].float()
            start = self.true_before[k] if following else self.found[k]
            found = locate_color(predicted.float().cpu(), color, prior=start)
            floor = locate_color(truth, color, prior=self.true_before[k])
            self.found[k] = found
            objects.append({"color": _hex(color), "error": float((found - true[k]).norm()),
                            "tracker_floor": float((floor - true[k]).norm()),
                            "true": [round(float(v), 4) for v in true[k]],
                            "found": [round(float(v), 4) for v in found]})
        self.true_before = true.clone()
        error = sum(o["error"] for o in objects) / len(objects) if objects else 0.0
        return {"error": error, "objects": objects, "units": "table units; the table is 2 wide"}
