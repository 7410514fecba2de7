"""The attacks' and evaluate's input checks: out-of-range labels are refused by evaluate as by the attacks."""

from __future__ import annotations

import pytest

from deepfast.attacks import evaluate
from tests.test_attacks import lenet, val  # noqa: F401 (fixtures)


@pytest.mark.parametrize("bad", [10, -1, 2**40])
def test_evaluate_refuses_labels_outside_the_classes(lenet, val, bad):
    x, y = val[0][:6], val[1][:6].clone()
    y[3] = bad
    with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 10\)"):
        evaluate(lenet, (x, y), attacks=["fgsm"], eps=[0.1], progress=False)
