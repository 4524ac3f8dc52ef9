"""Tour of the notes' tensor sections, done the JAX way: run `python experiments/tour_tensors.py`.

Data manipulation, operations, broadcasting, saving memory, shape and one-hot,
with the notes' example values. Each section prints the PyTorch line it mirrors.
"""

import argparse

import jax
import jax.numpy as jnp

from jaxbasics import tensors as T


def section(title: str) -> None:
    print(f"\n== {title} ==")


def show(torch_code: str, value: object) -> None:
    print(f"# torch: {torch_code}")
    print(value)


def create(key: jax.Array) -> None:
    section("Create a tensor")
    x = T.arange(12)
    show("x = torch.arange(12, dtype=torch.float32)", x)
    show("torch.randn(3, 4)", T.randn(key, 3, 4))
    show("mean + torch.sqrt(torch.tensor(variance)) * X  # N(5, 2)", T.normal(key, (3, 4), 5, 2))
    show(
        "torch.tensor([[2, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]])",
        T.tensor([[2, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]]),
    )
    show("torch.zeros((2, 3, 4))", T.zeros((2, 3, 4)))
    show("torch.ones((2, 3, 4))", T.ones((2, 3, 4)))
    show("x.numel()", T.numel(x))
    show("x.shape", x.shape)
    show("x.reshape(3, 4)", T.reshape(x, (3, 4)))
    show("x.reshape(-1, 4).shape", T.reshape(x, (-1, 4)).shape)
    show("x.reshape(3, -1).shape", T.reshape(x, (3, -1)).shape)
    show("torch.tensor([1.0]).item()", T.item(T.tensor([1.0])))


def operations() -> tuple[jax.Array, jax.Array]:
    """The notes' element-wise operations and concatenation; returns their X and Y."""
    x = T.arange(12)
    section("Operations")
    show("torch.exp(x)", jnp.exp(x))
    x = T.tensor([1.0, 2, 4, 8])
    y = T.tensor([2, 2, 2, 2])
    for op, value in [
        ("x + y", x + y),
        ("x - y", x - y),
        ("x * y", x * y),
        ("x / y", x / y),
        ("x ** y", x**y),
    ]:
        show(op, value)
    X = T.reshape(T.arange(12), (3, 4))
    Y = T.tensor([[2.0, 1, 4, 3], [1, 2, 3, 4], [4, 3, 2, 1]])
    show("X == Y", X == Y)
    P, Q = T.cat((X, Y), dim=0), T.cat((X, Y), dim=1)
    show("torch.cat((X, Y), dim=0).shape", P.shape)
    show("torch.cat((X, Y), dim=1).shape", Q.shape)
    return X, Y


def broadcasting() -> None:
    section("Broadcasting")
    a = T.reshape(jnp.arange(3), (3, 1))
    b = T.reshape(jnp.arange(2), (1, 2))
    show("a = torch.arange(3).reshape((3, 1))", a)
    show("b = torch.arange(2).reshape((1, 2))", b)
    show("a + b  # (3, 1) + (1, 2) -> (3, 2)", a + b)


def saving_memory(X: jax.Array, Y: jax.Array) -> None:
    section("Saving memory")
    before = id(Y)
    Y = Y + X
    show("before = id(Y); Y = Y + X; id(Y) == before", id(Y) == before)
    print("# JAX arrays are immutable: no Z[:] = X + Y. Z.at[:].set(X + Y) returns a new array.")
    Z = T.zeros_like(Y)
    print("id(Z):", id(Z))
    Z = Z.at[:].set(X + Y)
    print("id(Z):", id(Z), "(a new array)")
    print("# Donating X to a jitted x + y lets XLA write the result into X's buffer (X += Y):")
    pointer = X.unsafe_buffer_pointer()
    X = T.add_(X, Y)
    print("buffer reused:", X.unsafe_buffer_pointer() == pointer)


def shape_and_one_hot() -> None:
    section("Shape")
    inputs = T.zeros((256, 64, 8, 8))
    show("inputs.shape  # BCHW", inputs.shape)
    inputs = T.bchw_to_bhwc(inputs)
    show("inputs.permute(0, 2, 3, 1).contiguous().shape  # BHWC", inputs.shape)
    flat = T.flatten_vectors(inputs)
    show("inputs.view(-1, 64).shape  # (N, C), N = B*H*W", flat.shape)

    section("One-hot encoding via scatter")
    encoding_indices = T.tensor([3, 0, 2, 1, 3])
    show("encoding_indices = torch.argmin(distances, dim=1)", encoding_indices)
    encodings = T.scatter(T.zeros((5, 4)), 1, encoding_indices[:, None], 1.0)
    show("torch.zeros(5, 4).scatter_(1, encoding_indices.unsqueeze(1), 1)", encodings)
    same = bool((T.one_hot(encoding_indices, 4) == encodings).all())
    print("tensors.one_hot(encoding_indices, 4) gives the same:", same)
    try:
        T.scatter(T.zeros((5, 4)), 1, T.tensor([[4]] * 5), 1.0)
    except IndexError as err:
        print("out-of-range index:", err)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    create(jax.random.key(0))
    X, Y = operations()
    broadcasting()
    saving_memory(X, Y)
    shape_and_one_hot()


if __name__ == "__main__":
    main()
