"""Number-theory families: fizzbuzz variants, gcd/lcm, primes, digit sums.

A few buggy variants loop forever on some input (gcd by subtraction with a zero, a digit loop
that never shrinks n). They are drawn only sometimes, since each costs the verifier a timeout."""

from __future__ import annotations

import math
import random

from weighted_mtp.data.embedded.base import INT_ARGS, Problem, instruction, problem

_WORDS = ("Fizz", "Buzz", "Bang", "Pop", "Ping", "Pong", "Zap", "Boom")


def fizzbuzz(rng: random.Random) -> Problem:
    a, b = sorted(rng.sample([2, 3, 4, 5, 6, 7], 2))
    if b % a == 0:
        a, b = 3, 5
    wa, wb = rng.sample(_WORDS, 2)
    fn = rng.choice(["fizzbuzz", f"{wa.lower()}_{wb.lower()}", "say_numbers", "number_game"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n, a=a, b=b, wa=wa, wb=wb, both=wa + wb)
    instr = instruction(rng, fn, [n], [
        "returns a list of strings for the numbers 1 to `{n}` inclusive: \"{wa}\" for multiples of {a}, \"{wb}\" for multiples of {b}, \"{both}\" for multiples of both, and the number itself (as a string) otherwise.",
        "builds the {wa}{wb} sequence from 1 through `{n}`: multiples of both {a} and {b} become \"{both}\", other multiples of {a} become \"{wa}\", other multiples of {b} become \"{wb}\", and every remaining number is written with str().",
    ], v, ["For `{n}` < 1 return an empty list."])

    def ref(m):
        out = []
        for i in range(1, m + 1):
            out.append(wa + wb if i % a == 0 and i % b == 0 else wa if i % a == 0 else wb if i % b == 0 else str(i))
        return out

    cases = [(0,), (1,), (a * b,), (a * b + rng.randint(1, 4),), (max(a, b) + 1,)]
    correct = [
        """
        def $f($n):
            out = []
            for i in range(1, $n + 1):
                if i % $a == 0 and i % $b == 0:
                    out.append("$both")
                elif i % $a == 0:
                    out.append("$wa")
                elif i % $b == 0:
                    out.append("$wb")
                else:
                    out.append(str(i))
            return out
        """,
        """
        def $f($n):
            return [("$wa" if i % $a == 0 else "") + ("$wb" if i % $b == 0 else "") or str(i)
                    for i in range(1, $n + 1)]
        """,
    ]
    buggy = [
        """
        def $f($n):
            out = []
            for i in range(1, $n + 1):
                if i % $a == 0:
                    out.append("$wa")
                elif i % $b == 0:
                    out.append("$wb")
                elif i % $a == 0 and i % $b == 0:
                    out.append("$both")
                else:
                    out.append(str(i))
            return out
        """,
        """
        def $f($n):
            return [("$wa" if i % $a == 0 else "") + ("$wb" if i % $b == 0 else "") or str(i)
                    for i in range($n)]
        """,
        """
        def $f($n):
            return [("$wa" if i % $a == 0 else "") + ("$wb" if i % $b == 0 else "") or i
                    for i in range(1, $n + 1)]
        """,
    ]
    return problem("fizzbuzz", instr, fn, ref, cases, correct, buggy, v, 2)


def gcd_lcm(rng: random.Random) -> Problem:
    lcm = rng.random() < 0.35
    what = "least common multiple" if lcm else "greatest common divisor"
    fn = rng.choice(["lcm", "least_common_multiple", "lcm_of", "lowest_common_multiple", "common_multiple"] if lcm
                    else ["gcd", "greatest_common_divisor", "gcd_of", "hcf", "common_divisor", "euclid", "highest_common_factor"])
    a, b = rng.choice([("a", "b"), ("x", "y"), ("m", "n"), ("p", "q"), ("u", "v"), ("first", "second")])
    v = dict(f=fn, a=a, b=b, what=what)
    note = ["If either number is 0, return 0."] if lcm else ["gcd(0, n) is n, and gcd(0, 0) is 0."]
    instr = instruction(rng, fn, [a, b], [
        "returns the {what} of the non-negative integers `{a}` and `{b}`.",
        "computes the {what} of two non-negative integers `{a}` and `{b}` and returns it.",
    ], v, note)

    def ref(x, y):
        return x * y // math.gcd(x, y) if lcm and x and y else 0 if lcm else math.gcd(x, y)

    p = rng.randint(2, 9)
    cases = [(12, 18), (7, 5), (p * 3, p * 4), (9, 9), (rng.randint(1, 60), rng.randint(1, 60)), (1, 10)]
    cases += [(0, 6), (6, 0)] if rng.random() < 0.6 or lcm else [(5, 0)]
    if lcm:
        correct = [
            """
            import math

            def $f($a, $b):
                if $a == 0 or $b == 0:
                    return 0
                return $a * $b // math.gcd($a, $b)
            """,
            """
            def $f($a, $b):
                if $a == 0 or $b == 0:
                    return 0
                mult = max($a, $b)
                while mult % $a or mult % $b:
                    mult += max($a, $b)
                return mult
            """,
        ]
        buggy = [
            """
            def $f($a, $b):
                return $a * $b
            """,
            """
            import math

            def $f($a, $b):
                return $a * $b / math.gcd($a, $b)
            """,
            """
            def $f($a, $b):
                mult = max($a, $b)
                while mult % $a or mult % $b:
                    mult += 1
                return mult
            """,
        ]
        return problem("gcd_lcm", instr, fn, ref, cases, correct, buggy, v, 2)
    correct = [
        """
        def $f($a, $b):
            while $b:
                $a, $b = $b, $a % $b
            return $a
        """,
        """
        def $f($a, $b):
            return $a if $b == 0 else $f($b, $a % $b)
        """,
        """
        import math

        def $f($a, $b):
            return math.gcd($a, $b)
        """,
    ]
    buggy = [
        """
        def $f($a, $b):
            for d in range(min($a, $b), 0, -1):
                if $a % d == 0 and $b % d == 0:
                    return d
            return 1
        """,
        """
        def $f($a, $b):
            while $b > 1:
                $a, $b = $b, $a % $b
            return $a
        """,
    ]
    if rng.random() < 0.25:  # loops forever when one argument is 0
        buggy.append("""
        def $f($a, $b):
            while $a != $b:
                if $a > $b:
                    $a -= $b
                else:
                    $b -= $a
            return $a
        """)
    return problem("gcd_lcm", instr, fn, ref, cases, correct, buggy, v, 2)


def is_prime(rng: random.Random) -> Problem:
    fn = rng.choice(["is_prime", "prime", "check_prime", "isprime", "prime_test", "is_a_prime", "primality"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n)
    instr = instruction(rng, fn, [n], [
        "returns True if the integer `{n}` is a prime number and False otherwise.",
        "decides whether `{n}` is prime (divisible only by 1 and itself, and greater than 1).",
    ], v, ["Numbers below 2, including negatives, are not prime."])

    def ref(m):
        return m >= 2 and all(m % d for d in range(2, math.isqrt(m) + 1))

    cases = [(-7,), (0,), (1,), (2,), (4,), (9,), (25,), (13,), (rng.choice([49, 121, 169]),), (rng.randint(30, 200),)]
    correct = [
        """
        def $f($n):
            if $n < 2:
                return False
            d = 2
            while d * d <= $n:
                if $n % d == 0:
                    return False
                d += 1
            return True
        """,
        """
        def $f($n):
            return $n > 1 and all($n % d != 0 for d in range(2, int($n ** 0.5) + 1))
        """,
        """
        def $f($n):
            return $n >= 2 and not any($n % d == 0 for d in range(2, $n))
        """,
    ]
    buggy = [
        """
        def $f($n):
            return $n > 1 and all($n % d != 0 for d in range(2, int($n ** 0.5)))
        """,
        """
        def $f($n):
            for d in range(2, $n):
                if $n % d == 0:
                    return False
            return True
        """,
        """
        def $f($n):
            if $n < 2:
                return False
            for d in range(2, $n // 2):
                if $n % d == 0:
                    return False
            return True
        """,
    ]
    return problem("is_prime", instr, fn, ref, cases, correct, buggy, v, 2)


def count_primes(rng: random.Random) -> Problem:
    inclusive = rng.random() < 0.5
    fn = rng.choice(["primes_up_to", "list_primes", "primes_below", "prime_list"])
    n = rng.choice(INT_ARGS)
    rel = "less than or equal to" if inclusive else "strictly less than"
    v = dict(f=fn, n=n, rel=rel, top=f"{n} + 1" if inclusive else n, badtop=n if inclusive else f"{n} + 1")
    instr = instruction(rng, fn, [n], [
        "returns the list of all prime numbers {rel} `{n}`, in increasing order.",
        "returns every prime p with p {rel} `{n}` as an ascending list.",
    ], v, ["Return an empty list when there are none."])

    def ref(m):
        top = m + 1 if inclusive else m
        return [p for p in range(2, max(top, 2)) if all(p % d for d in range(2, math.isqrt(p) + 1))]

    cases = [(0,), (2,), (3,), (10,), (11,), (rng.randint(20, 60),)]
    correct = [
        """
        def $f($n):
            return [p for p in range(2, $top) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
        """,
        """
        def $f($n):
            primes = []
            for p in range(2, $top):
                if all(p % q for q in primes):
                    primes.append(p)
            return primes
        """,
        """
        def $f($n):
            top = $top
            if top < 3:
                return []
            sieve = [True] * top
            sieve[0] = sieve[1] = False
            for i in range(2, int(top ** 0.5) + 1):
                if sieve[i]:
                    sieve[i * i::i] = [False] * len(sieve[i * i::i])
            return [i for i, ok in enumerate(sieve) if ok]
        """,
    ]
    buggy = [
        """
        def $f($n):
            return [p for p in range(2, $badtop) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
        """,
        """
        def $f($n):
            return [p for p in range(1, $top) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
        """,
        """
        def $f($n):
            return [p for p in range(2, $top) if all(p % d for d in range(2, int(p ** 0.5)))]
        """,
    ]
    return problem("count_primes", instr, fn, ref, cases, correct, buggy, v, 3)


def digit_sum(rng: random.Random) -> Problem:
    fn = rng.choice(["digit_sum", "sum_digits", "sum_of_digits", "add_digits", "digits_total", "cross_sum", "total_of_digits"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n)
    instr = instruction(rng, fn, [n], [
        "returns the sum of the decimal digits of the integer `{n}`; the sign of a negative number is ignored.",
        "adds up the digits of `{n}` (use the absolute value for negative numbers) and returns the total.",
    ], v, ["The digit sum of 0 is 0."])

    def ref(m):
        return sum(int(c) for c in str(abs(m)))

    cases = [(0,), (7,), (1234,), (-56,), (1000,), (rng.randint(100, 99999),)]
    correct = [
        """
        def $f($n):
            return sum(int(c) for c in str(abs($n)))
        """,
        """
        def $f($n):
            $n = abs($n)
            total = 0
            while $n > 0:
                total += $n % 10
                $n //= 10
            return total
        """,
        """
        def $f($n):
            return sum(map(int, str(abs($n))))
        """,
    ]
    buggy = [
        """
        def $f($n):
            return sum(int(c) for c in str($n))
        """,
        """
        def $f($n):
            total = 0
            while $n > 0:
                total += $n % 10
                $n //= 10
            return total
        """,
        """
        def $f($n):
            return sum(int(c) for c in str(abs($n))[1:])
        """,
    ]
    if rng.random() < 0.2:  # never shrinks n: loops forever for any n > 0
        buggy.append("""
        def $f($n):
            $n = abs($n)
            total = 0
            while $n > 0:
                total += $n % 10
                $n // 10
            return total
        """)
    return problem("digit_sum", instr, fn, ref, cases, correct, buggy, v, 1)


FAMILIES = (fizzbuzz, gcd_lcm, is_prime, count_primes, digit_sum)
