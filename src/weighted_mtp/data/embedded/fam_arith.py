"""Integer families: sums of multiples, digit reversal, divisors, powers, leap
years, clamping one value, binary digits."""

from __future__ import annotations

import random

from weighted_mtp.data.embedded.base import INT_ARGS, Problem, instruction, problem


def sum_multiples(rng: random.Random) -> Problem:
    a, b = rng.sample([2, 3, 4, 5, 6, 7], 2)
    a, b = min(a, b), max(a, b)
    inclusive = rng.random() < 0.4
    fn = rng.choice(["sum_multiples", f"sum_of_{a}_or_{b}", "multiples_sum", "euler_one"])
    n = rng.choice(INT_ARGS)
    rel = "up to and including" if inclusive else "below"
    v = dict(f=fn, n=n, a=a, b=b, rel=rel, top=f"{n} + 1" if inclusive else n, badtop=n if inclusive else f"{n} + 1")
    instr = instruction(rng, fn, [n], [
        "returns the sum of all positive integers {rel} `{n}` that are multiples of {a} or {b}.",
        "adds up every number from 1 {rel} `{n}` divisible by {a} or by {b} (numbers divisible by both count once).",
    ], v)

    def ref(m):
        return sum(i for i in range(1, m + 1 if inclusive else m) if i % a == 0 or i % b == 0)

    cases = [(0,), (a,), (b,), (a * b,), (rng.randint(10, 50),)]
    correct = [
        """
        def $f($n):
            return sum(i for i in range(1, $top) if i % $a == 0 or i % $b == 0)
        """,
        """
        def $f($n):
            total = 0
            for i in range(1, $top):
                if i % $a == 0 or i % $b == 0:
                    total += i
            return total
        """,
    ]
    buggy = [
        """
        def $f($n):
            return sum(range($a, $top, $a)) + sum(range($b, $top, $b))
        """,
        """
        def $f($n):
            return sum(i for i in range(1, $badtop) if i % $a == 0 or i % $b == 0)
        """,
        """
        def $f($n):
            return sum(i for i in range(1, $top) if i % $a == 0 and i % $b == 0)
        """,
    ]
    return problem("sum_multiples", instr, fn, ref, cases, correct, buggy, v, 2)


def reverse_int(rng: random.Random) -> Problem:
    fn = rng.choice(["reverse_digits", "reverse_number", "flip_int", "reversed_int", "mirror_number", "digits_reversed"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n)
    instr = instruction(rng, fn, [n], [
        "returns the integer formed by the digits of `{n}` in reverse order, keeping the sign (so -123 gives -321 and 120 gives 21).",
        "reverses the decimal digits of the integer `{n}` and returns the result as an int with the same sign as `{n}`.",
    ], v)

    def ref(m):
        r = int(str(abs(m))[::-1])
        return -r if m < 0 else r

    cases = [(0,), (5,), (123,), (-123,), (120,), (rng.randint(1000, 99999),)]
    correct = [
        """
        def $f($n):
            r = int(str(abs($n))[::-1])
            return -r if $n < 0 else r
        """,
        """
        def $f($n):
            sign = -1 if $n < 0 else 1
            $n = abs($n)
            r = 0
            while $n:
                r = r * 10 + $n % 10
                $n //= 10
            return sign * r
        """,
    ]
    buggy = [
        """
        def $f($n):
            return int(str(abs($n))[::-1])
        """,
        """
        def $f($n):
            return str(abs($n))[::-1]
        """,
        """
        def $f($n):
            r = 0
            while $n > 0:
                r = r * 10 + $n % 10
                $n //= 10
            return r
        """,
    ]
    return problem("reverse_int", instr, fn, ref, cases, correct, buggy, v, 2)


def count_divisors(rng: random.Random) -> Problem:
    proper = rng.random() < 0.4
    fn = rng.choice(["count_divisors", "num_divisors", "divisor_count", "tau"])
    n = rng.choice(INT_ARGS)
    what = "proper divisors (divisors smaller than the number itself)" if proper else "positive divisors, including 1 and the number itself"
    v = dict(f=fn, n=n, what=what, top=n if proper else f"{n} + 1", badtop=f"{n} + 1" if proper else n)
    instr = instruction(rng, fn, [n], [
        "returns the number of {what} of the positive integer `{n}`.",
        "counts the {what} of `{n}`, where `{n}` >= 1.",
    ], v)

    def ref(m):
        return sum(1 for d in range(1, m if proper else m + 1) if m % d == 0)

    cases = [(1,), (2,), (12,), (13,), (36,), (rng.randint(20, 100),)]
    correct = [
        """
        def $f($n):
            return sum(1 for d in range(1, $top) if $n % d == 0)
        """,
        """
        def $f($n):
            count = 0
            for d in range(1, $top):
                if $n % d == 0:
                    count += 1
            return count
        """,
        """
        def $f($n):
            return len([d for d in range(1, $top) if $n % d == 0])
        """,
    ]
    buggy = [
        """
        def $f($n):
            return sum(1 for d in range(1, $badtop) if $n % d == 0)
        """,
        """
        def $f($n):
            return sum(1 for d in range(2, $top) if $n % d == 0)
        """,
        """
        def $f($n):
            return sum(1 for d in range(1, int($n ** 0.5) + 1) if $n % d == 0) * 2
        """,
    ]
    return problem("count_divisors", instr, fn, ref, cases, correct, buggy, v, 2)


def is_power(rng: random.Random) -> Problem:
    base = rng.choice([2, 2, 3, 4, 5, 10])
    fn = rng.choice([f"is_power_of_{base}", f"power_of_{base}", f"check_pow{base}"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n, b=base)
    instr = instruction(rng, fn, [n], [
        "returns True if the integer `{n}` equals {b} ** k for some integer k >= 0, and False otherwise.",
        "checks whether `{n}` is a power of {b} (1 counts, as {b} ** 0).",
    ], v, ["Zero and negative numbers are never powers of {b}."])

    def ref(m):
        if m < 1:
            return False
        while m % base == 0:
            m //= base
        return m == 1

    cases = [(1,), (base,), (base ** 3,), (base ** 2 + 1,), (-base,), (base * 6 + 1,), (0,)]
    correct = [
        """
        def $f($n):
            if $n < 1:
                return False
            while $n % $b == 0:
                $n //= $b
            return $n == 1
        """,
        """
        def $f($n):
            p = 1
            while p < $n:
                p *= $b
            return p == $n
        """,
        """
        def $f($n):
            return any($b ** e == $n for e in range(64))
        """,
    ]
    buggy = [
        """
        def $f($n):
            p = $b
            while p < $n:
                p *= $b
            return p == $n
        """,
        """
        def $f($n):
            return $n % $b == 0
        """,
    ]
    if rng.random() < 0.25:  # loops forever on 0
        buggy.append("""
        def $f($n):
            while $n % $b == 0:
                $n //= $b
            return $n == 1
        """)
    else:
        buggy.append("""
        def $f($n):
            return any($b ** e == $n for e in range(1, 64))
        """)
    return problem("is_power", instr, fn, ref, cases, correct, buggy, v, 2)


def leap_year(rng: random.Random) -> Problem:
    fn = rng.choice(["is_leap", "leap_year", "is_leap_year", "has_feb_29", "leap", "check_leap", "gregorian_leap", "leap_check", "is_leapyear"])
    y = rng.choice(["year", "y", "yr", "year_num", "yyyy"])
    v = dict(f=fn, y=y)
    instr = instruction(rng, fn, [y], [
        "returns True if `{y}` is a leap year in the Gregorian calendar: divisible by 4, except years divisible by 100 that are not divisible by 400.",
        "decides whether the year `{y}` is a Gregorian leap year (every 4th year, but century years only when divisible by 400).",
    ], v)

    def ref(t):
        return t % 4 == 0 and (t % 100 != 0 or t % 400 == 0)

    cases = [(2024,), (2023,), (1900,), (2000,), (rng.randint(1600, 2400),), (rng.choice([1700, 1800, 2100, 2200]),)]
    correct = [
        """
        def $f($y):
            return $y % 4 == 0 and ($y % 100 != 0 or $y % 400 == 0)
        """,
        """
        def $f($y):
            if $y % 400 == 0:
                return True
            if $y % 100 == 0:
                return False
            return $y % 4 == 0
        """,
        """
        import calendar

        def $f($y):
            return calendar.isleap($y)
        """,
    ]
    buggy = [
        """
        def $f($y):
            return $y % 4 == 0
        """,
        """
        def $f($y):
            return $y % 4 == 0 and $y % 100 != 0
        """,
        """
        def $f($y):
            if $y % 100 == 0:
                return False
            if $y % 400 == 0:
                return True
            return $y % 4 == 0
        """,
    ]
    return problem("leap_year", instr, fn, ref, cases, correct, buggy, v, 1)


def clamp_scalar(rng: random.Random) -> Problem:
    fn = rng.choice(["clamp", "clip", "bound", "constrain", "clamp_value", "limit", "restrict", "clamp_num", "squeeze"])
    x, lo, hi = rng.choice([("x", "lo", "hi"), ("value", "low", "high"), ("n", "minimum", "maximum"), ("v", "lower", "upper"), ("num", "a", "b")])
    v = dict(f=fn, x=x, lo=lo, hi=hi)
    instr = instruction(rng, fn, [x, lo, hi], [
        "returns `{x}` limited to the closed range [`{lo}`, `{hi}`]: `{lo}` if it is smaller, `{hi}` if it is larger, otherwise `{x}` itself.",
        "clamps the number `{x}` between `{lo}` and `{hi}` (you may assume `{lo}` <= `{hi}`).",
    ], v)

    def ref(a, b, c):
        return min(max(a, b), c)

    lo_v = rng.randint(-10, 5)
    hi_v = lo_v + rng.randint(1, 10)
    cases = [(lo_v - 3, lo_v, hi_v), (hi_v + 2, lo_v, hi_v), (lo_v, lo_v, hi_v), (hi_v, lo_v, hi_v),
             (lo_v + 1, lo_v, hi_v), (5, 5, 5)]
    correct = [
        """
        def $f($x, $lo, $hi):
            return max($lo, min($x, $hi))
        """,
        """
        def $f($x, $lo, $hi):
            if $x < $lo:
                return $lo
            if $x > $hi:
                return $hi
            return $x
        """,
        """
        def $f($x, $lo, $hi):
            return sorted([$lo, $x, $hi])[1]
        """,
    ]
    buggy = [
        """
        def $f($x, $lo, $hi):
            return min($lo, max($x, $hi))
        """,
        """
        def $f($x, $lo, $hi):
            if $x < $lo:
                return $lo
            if $x > $hi:
                return $hi
        """,
        """
        def $f($x, $lo, $hi):
            return $lo if $x <= $lo else $x if $x < $hi else $x - 1
        """,
    ]
    return problem("clamp_scalar", instr, fn, ref, cases, correct, buggy, v, 1)


def binary_ones(rng: random.Random) -> Problem:
    zeros = rng.random() < 0.3
    what = "zeros" if zeros else "ones"
    fn = rng.choice([f"count_{what}", f"binary_{what}", f"bit_{what}", "popcount" if not zeros else "zero_bits"])
    n = rng.choice(INT_ARGS)
    v = dict(f=fn, n=n, what=what, d="0" if zeros else "1", nd="1" if zeros else "0")
    instr = instruction(rng, fn, [n], [
        "returns how many {what} appear in the binary representation of the non-negative integer `{n}` (without leading zeros).",
        "counts the binary digits equal to {d} in `{n}` written in base 2, with no leading zeros; `{n}` >= 0.",
    ], v, ["0 is written as \"0\" in binary."])

    def ref(m):
        return bin(m)[2:].count("0" if zeros else "1")

    cases = [(0,), (1,), (2,), (5,), (8,), (rng.randint(20, 500),)]
    correct = [
        """
        def $f($n):
            return bin($n)[2:].count("$d")
        """,
        """
        def $f($n):
            return format($n, "b").count("$d")
        """,
    ]
    if not zeros:
        correct.append("""
        def $f($n):
            count = 0
            while $n:
                count += $n & 1
                $n >>= 1
            return count
        """)
    buggy = [
        """
        def $f($n):
            return bin($n)[3:].count("$d")
        """ if not zeros else """
        def $f($n):
            return bin($n).count("$d")
        """,
        """
        def $f($n):
            return bin($n)[2:].count("$nd")
        """,
        """
        def $f($n):
            return str($n).count("$d")
        """,
    ]
    return problem("binary_ones", instr, fn, ref, cases, correct, buggy, v, 2)


FAMILIES = (sum_multiples, reverse_int, count_divisors, is_power, leap_year,
            clamp_scalar, binary_ones)
