"""Tour of the notes' Automatic Differentiation, Documentation and Debug sections.

Run `python experiments/tour_autodiff.py`. Gradients are return values in JAX:
there is no `.grad` buffer, so nothing accumulates and nothing needs zeroing.
"""

import argparse

import jax
import jax.numpy as jnp

from jaxbasics import autodiff, debug, docs


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()

    print("== y = 2 x.x, grad = 4x ==")
    x = jnp.arange(4.0)
    print(f"y = {2 * jnp.dot(x, x)}")
    grad = autodiff.grad_of_dot(x)
    print(f"x.grad: {grad}")
    print(f"x.grad == 4*x: {grad == 4 * x}")

    print("\n== y = sum(x), grad = ones ==")
    print(f"x.grad: {autodiff.grad_of_sum(x)}")

    print("\n== Accumulation vs reset ==")

    def loss(w, pick_dot):
        # "batch" 1.0 selects y = 2 x.x, "batch" 0.0 selects y = sum(x): the notes' two losses.
        return pick_dot * 2 * jnp.dot(w, w) + (1 - pick_dot) * jnp.sum(w)

    both = autodiff.accumulate_grads(loss, x, [jnp.array(1.0), jnp.array(0.0)])
    print(f"torch: two backward() calls without zero_() -> x.grad = {both}  (4x + 1)")
    print(f"jax: each jax.grad call starts fresh        -> {autodiff.grad_of_sum(x)}")

    print("\n== Straight-through estimator ==")
    z = jnp.array([0.2, 0.7, -1.3])
    q = jnp.round(z)
    out = autodiff.straight_through(z, q)
    print(f"inputs z = {z}, quantized q = {q}")
    print(f"z + stop_gradient(q - z) = {out}  (equals q)")
    jac = jax.jacobian(autodiff.straight_through)(z, q)
    print(f"d out / d z =\n{jac}  (identity: gradients pass straight through)")

    print("\n== Documentation: dir() and help() ==")
    names = docs.public_api(jax.random)
    print(f"public_api(jax.random) [{len(names)} names]: {names}")
    print(docs.describe(jnp.ones))

    print("\n== Debug: checkify reports a NaN inside jit with its source line ==")

    def log_of_double(x):
        return jnp.log(2 * x)

    try:
        debug.checked(log_of_double)(jnp.array([1.0, -1.0]))
    except debug.CheckError as err:
        print(f"CheckError: {err}")
    with debug.debug_mode():
        try:
            jax.jit(log_of_double)(-1.0)
        except FloatingPointError as err:
            print(
                f"debug_mode (no jit, debug_nans): FloatingPointError: {str(err).splitlines()[0]}"
            )


if __name__ == "__main__":
    main()
