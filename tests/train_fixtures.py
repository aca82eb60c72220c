"""A small repository for the data stage: Python and JavaScript functions with docs, calls, and
comparisons, integer literals, several parameters and returns (so every bug kind applies), plus a
planted secret that must never reach a dataset.
"""

from __future__ import annotations

from pathlib import Path

PLANTED_SECRET = "sk-proj-TRAINDATAplanted0123456789abcdefQ"

FILES: dict[str, str] = {
    "inventory/stock.py": '''\
"""Stock keeping for a small shop."""


def restock_needed(count: int, minimum: int) -> bool:
    """Tell whether an item's count has fallen below its minimum and must be reordered."""
    if count < minimum:
        return True
    return False


def order_size(count: int, target: int, pack: int) -> int:
    """Compute how many packs to order so that the count reaches the target."""
    missing = target - count
    if missing <= 0:
        return 0
    return (missing + pack - 1) // pack


def total_value(prices: list[float], counts: list[int]) -> float:
    """Add up the value of the stock: each price times its count."""
    total = 0.0
    for price, count in zip(prices, counts):
        total += price * count
    return total
''',
    "inventory/report.py": '''\
from inventory.stock import order_size, restock_needed


def shopping_list(items: dict[str, tuple[int, int, int]]) -> list[str]:
    """List the items to reorder, each with the number of packs to buy."""
    lines = []
    for name, (count, minimum, pack) in sorted(items.items()):
        if restock_needed(count, minimum):
            lines.append(f"{name}: {order_size(count, minimum * 2, pack)} packs")
    return lines
''',
    "inventory/settings.py": f'''\
SUPPLIER_API_KEY = "{PLANTED_SECRET}"


def supplier_headers(user: str) -> dict[str, str]:
    """Build the headers every request to the supplier carries."""
    headers = {{"user": user}}
    headers["key"] = SUPPLIER_API_KEY
    return headers
''',
    "web/cart.js": """\
// Shopping cart helpers for the web shop.

/**
 * Sum the prices of the items in the cart, applying each item's quantity.
 */
function cartTotal(items, taxRate) {
  let total = 0;
  for (const item of items) {
    total += item.price * item.quantity;
  }
  return total * (1 + taxRate);
}

/**
 * Tell whether the cart qualifies for free shipping above the threshold.
 */
function freeShipping(total, threshold) {
  if (total >= threshold) {
    return true;
  }
  return false;
}

function checkout(items) {
  const total = cartTotal(items, 0);
  return freeShipping(total, 50) ? total : total + 5;
}
""",
    ".env": f"SUPPLIER_API_KEY={PLANTED_SECRET}\n",
}


def write_repo(root: Path) -> Path:
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def stop_at(step: int) -> object:
    """A transformers callback that stops the run at the start of `step`, after a checkpoint: a kill, on purpose."""
    from transformers import TrainerCallback

    class StopAtStep(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: object, state: object, control: object, **kwargs: object) -> None:
            if getattr(state, "global_step", None) == step:
                raise KeyboardInterrupt

    return StopAtStep()
