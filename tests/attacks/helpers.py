"""Shared checks for attack tests."""
import torch


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def norms(delta, p):
    flat = delta.flatten(1)
    return flat.abs().amax(1) if p == "linf" else flat.norm(p=p, dim=1)
