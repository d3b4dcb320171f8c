"""Integer sequences and recurrences: factorial, Fibonacci-like terms, Collatz steps."""

from __future__ import annotations

import math
import random

from weighted_mtp.data.embedded.base import INT_ARGS, Problem, instruction, problem


def factorial(rng: random.Random) -> Problem:
    fn = rng.choice(["factorial", "fact", "product_up_to", "n_factorial", "factorial_of", "compute_factorial"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n)
    instr = instruction(rng, fn, [n], [
        "returns `{n}`! (the product 1 * 2 * ... * `{n}`) for a non-negative integer `{n}`.",
        "computes the factorial of the non-negative integer `{n}`.",
    ], v, ["0! is 1."])
    cases = [(0,), (1,), (2,), (5,), (rng.randint(6, 12),)]
    correct = [
        """
        def $f($n):
            result = 1
            for i in range(2, $n + 1):
                result *= i
            return result
        """,
        """
        def $f($n):
            return 1 if $n <= 1 else $n * $f($n - 1)
        """,
        """
        import math

        def $f($n):
            return math.factorial($n)
        """,
    ]
    buggy = [
        """
        def $f($n):
            result = 1
            for i in range(1, $n):
                result *= i
            return result
        """,
        """
        def $f($n):
            result = 0
            for i in range(1, $n + 1):
                result *= i
            return result
        """,
        """
        def $f($n):
            return $n if $n <= 1 else $n * $f($n - 1)
        """,
    ]
    return problem("factorial", instr, fn, math.factorial, cases, correct, buggy, v, 1)


def fibonacci(rng: random.Random) -> Problem:
    f0, f1 = rng.choice([(0, 1), (0, 1), (1, 1), (2, 1), (1, 3)])
    name = "Fibonacci" if (f0, f1) == (0, 1) else "Fibonacci-like"
    fn = rng.choice(["fib", "fibonacci", "nth_fib", "fib_number"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n, f0=f0, f1=f1, name=name)
    instr = instruction(rng, fn, [n], [
        "returns term `{n}` (counting from 0) of the {name} sequence that starts {f0}, {f1} and in which each later term is the sum of the previous two.",
        "computes F({n}) where F(0) = {f0}, F(1) = {f1} and F(i) = F(i - 1) + F(i - 2) for i >= 2.",
    ], v, ["`{n}` is a non-negative integer."])

    def ref(m):
        x, y = f0, f1
        for _ in range(m):
            x, y = y, x + y
        return x

    cases = [(0,), (1,), (2,), (5,), (rng.randint(8, 20),)]
    correct = [
        """
        def $f($n):
            a, b = $f0, $f1
            for _ in range($n):
                a, b = b, a + b
            return a
        """,
        """
        def $f($n):
            seq = [$f0, $f1]
            while len(seq) <= $n:
                seq.append(seq[-1] + seq[-2])
            return seq[$n]
        """,
    ]
    buggy = [
        """
        def $f($n):
            a, b = $f0, $f1
            for _ in range($n - 1):
                a, b = b, a + b
            return a
        """,
        """
        def $f($n):
            a, b = $f0, $f1
            for _ in range($n):
                a, b = b, a + b
            return b
        """,
        """
        def $f($n):
            seq = [$f0, $f1]
            while len(seq) < $n:
                seq.append(seq[-1] + seq[-2])
            return seq[-1]
        """,
    ]
    return problem("fibonacci", instr, fn, ref, cases, correct, buggy, v, 2)


def collatz_steps(rng: random.Random) -> Problem:
    fn = rng.choice(["collatz_steps", "collatz_length", "steps_to_one", "hailstone_steps", "collatz_count", "hailstone_length", "count_collatz"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n)
    instr = instruction(rng, fn, [n], [
        "returns how many steps the Collatz process takes to reach 1 from the positive integer `{n}`: an even number is halved, an odd number becomes 3 * n + 1.",
        "counts the steps needed to turn `{n}` (a positive integer) into 1, where each step replaces an even value by half of it and an odd value by three times it plus one.",
    ], v, ["For `{n}` = 1 the answer is 0."])

    def ref(m):
        c = 0
        while m != 1:
            m = m // 2 if m % 2 == 0 else 3 * m + 1
            c += 1
        return c

    cases = [(1,), (2,), (3,), (6,), (7,), (rng.randint(8, 60),)]
    correct = [
        """
        def $f($n):
            steps = 0
            while $n != 1:
                $n = $n // 2 if $n % 2 == 0 else 3 * $n + 1
                steps += 1
            return steps
        """,
        """
        def $f($n):
            if $n == 1:
                return 0
            if $n % 2 == 0:
                return 1 + $f($n // 2)
            return 1 + $f(3 * $n + 1)
        """,
    ]
    buggy = [
        """
        def $f($n):
            steps = 1
            while $n != 1:
                $n = $n // 2 if $n % 2 == 0 else 3 * $n + 1
                steps += 1
            return steps
        """,
        """
        def $f($n):
            steps = 0
            while $n > 2:
                $n = $n // 2 if $n % 2 == 0 else 3 * $n + 1
                steps += 1
            return steps
        """,
        """
        def $f($n):
            steps = 0
            while $n != 1:
                if $n % 2 == 0:
                    $n //= 2
                    steps += 1
                else:
                    $n = 3 * $n + 1
            return steps
        """,
    ]
    return problem("collatz_steps", instr, fn, ref, cases, correct, buggy, v, 2)


FAMILIES = (factorial, fibonacci, collatz_steps)
