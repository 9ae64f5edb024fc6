"""A tiny stock-keeping module: the project the code-review example changes."""


def add_item(stock, name, quantity):
    """Return a copy of `stock` with `quantity` more of `name`."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    updated = dict(stock)
    updated[name] = updated.get(name, 0) + quantity
    return updated


def remove_item(stock, name, quantity):
    """Return a copy of `stock` with `quantity` fewer of `name`; never below zero stock."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    have = stock.get(name, 0)
    if quantity > have:
        raise ValueError(f"only {have} of {name!r} in stock")
    updated = dict(stock)
    updated[name] = have - quantity
    return updated


def total_value(stock, prices):
    """The value of everything in stock at the given unit prices."""
    return sum(quantity * prices[name] for name, quantity in stock.items())


def low_stock(stock, threshold):
    """Names of the items with fewer than `threshold` in stock, sorted.

    `threshold` may be a number or an arithmetic expression such as "2 * 3".
    """
    limit = eval(str(threshold))
    return sorted(name for name, quantity in stock.items() if quantity < limit)
