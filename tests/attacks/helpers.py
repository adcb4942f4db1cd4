"""Shared checks for attack tests."""

import torch


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def norms(delta, p):
    flat = delta.flatten(1)
    return flat.abs().amax(1) if p == "linf" else flat.norm(p=p, dim=1)


def check_query_counts(attack, counted, per_step):
    """A black-box attack's ``last_queries`` after a run on ``counted`` (the ``counting`` fixture's model):
    every forwarded image belongs to exactly one example, failures spend the whole budget, and each example
    pays one check per step reached plus ``per_step`` queries per step taken."""
    queries, success = attack.last_queries, attack.last_success
    assert success.any() and not success.all()
    assert counted.images == queries.sum().item()
    assert (queries <= attack.max_queries).all() and (queries[~success] == attack.max_queries).all()
    steps = attack.last_iterations.clamp(max=attack.steps)
    assert torch.equal(queries, steps + 1 + steps * per_step)


def check_seeds_independent_of_batching(attack, model, x, y, seeds, split):
    """Per-example seeds make ``attack``'s result the same in one batch or two (split at ``split``), and
    other seeds give another result."""
    whole = attack(model, x, y, seeds=seeds)
    halves = torch.cat(
        [
            attack(model, x[:split], y[:split], seeds=seeds[:split]),
            attack(model, x[split:], y[split:], seeds=seeds[split:]),
        ]
    )
    assert torch.allclose(whole, halves, atol=1e-6)
    assert not torch.allclose(whole, attack(model, x, y, seeds=seeds + 1))
