"""Tour of the notes' Calculus and Plot sections: run `python experiments/tour_calculus.py`.

Prints the limit table of f(x) = 3x² − 4x at x = 1 (float64, and float32 to show
the cancellation), the derivative via jax.grad, and the tangent line at x = 1,
which is y = 2x − 3 (the notes' "y = 2x − 1" is wrong). Saves the tangent plot.
"""

import argparse

import jax
import numpy as np

from jaxbasics import calculus


def f(x):
    return 3 * x**2 - 4 * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out",
        default="tangent.svg",
        help="where to save the plot of f and its tangent at x=1 (default: ./tangent.svg)",
    )
    args = parser.parse_args()

    print("== Numerical limit of (f(1+h) - f(1)) / h, float64 (jax.enable_x64 scope) ==")
    hs = 10.0 ** np.arange(-1, -6, -1)
    for h, value in calculus.limit_table(f, 1.0, hs):
        print(f"h={h:.5f}, numerical limit={value:.5f}")

    print("\n== The same in float32: cancellation spoils small h ==")
    for h, value in calculus.limit_table(f, 1.0, hs, x64=False):
        print(f"h={h:.5f}, numerical limit={value:.5f}")

    print("\n== Derivative via jax.grad ==")
    df = calculus.derivative(f)
    print(f"f'(1) = {float(df(1.0)):g}  (6x - 4 at x = 1)")
    print(f"f'(x) at x = 0, 1, 2: {jax.vmap(df)(np.array([0.0, 1.0, 2.0]))}")

    print("\n== Tangent line at x = 1 ==")
    slope, intercept = (float(v) for v in calculus.tangent_line(f, 1.0))
    print(f"f(1) = {f(1.0):g}, f'(1) = {slope:g}")
    sign = "-" if intercept < 0 else "+"
    print(f"tangent: y = {slope:g}x {sign} {abs(intercept):g}")
    print("(the notes say y = 2x - 1, but that line gives 1 at x = 1, not f(1) = -1)")

    fig = calculus.plot_tangent(f, 1.0)
    fig.savefig(args.out)
    print(f"saved the plot to {args.out}")


if __name__ == "__main__":
    main()
