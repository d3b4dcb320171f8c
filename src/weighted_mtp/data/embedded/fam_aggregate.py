"""List families that reduce a list to one number: sums, counts, products, arg-max."""

from __future__ import annotations

import random

from weighted_mtp.data.embedded.base import LIST_ARGS, Problem, instruction, problem, rand_ints


def sum_threshold(rng: random.Random) -> Problem:
    fn = rng.choice(["sum_above", "sum_over", "total_above", "sum_big", "add_above", "sum_large"])
    a = rng.choice(LIST_ARGS)
    k = rng.randint(-5, 15)
    strict = rng.random() < 0.5
    op, wrong = (">", ">=") if strict else (">=", ">")
    rel = "strictly greater than" if strict else "greater than or equal to"
    v = dict(f=fn, a=a, k=k, op=op, wrong=wrong, rel=rel)
    instr = instruction(rng, fn, [a], [
        "returns the sum of the numbers in the list `{a}` that are {rel} {k}.",
        "adds up every element of `{a}` that is {rel} {k} and returns the total.",
        "takes a list of integers `{a}` and returns the sum of the elements {rel} {k}.",
    ], v, ["If no element qualifies, return 0.", "An empty list gives 0."])

    def ref(xs):
        return sum(x for x in xs if (x > k if strict else x >= k))

    cases = [([],), ([k],), ([k - 1, k, k + 1],), ([k - 3, k - 2],)]
    cases += [(rand_ints(rng, lo=k - 6, hi=k + 6),) for _ in range(3)]
    correct = [
        """
        def $f($a):
            total = 0
            for x in $a:
                if x $op $k:
                    total += x
            return total
        """,
        """
        def $f($a):
            return sum(x for x in $a if x $op $k)
        """,
        """
        def $f($a):
            return sum(filter(lambda x: x $op $k, $a))
        """,
    ]
    buggy = [
        """
        def $f($a):
            return sum(x for x in $a if x $wrong $k)
        """,
        """
        def $f($a):
            total = 0
            for x in $a:
                if x $op $k:
                    total += 1
            return total
        """,
        """
        def $f($a):
            total = 0
            for x in $a:
                if x $op $k:
                    total += x
                return total
        """,
    ]
    return problem("sum_threshold", instr, fn, ref, cases, correct, buggy, v, 1)


def count_threshold(rng: random.Random) -> Problem:
    fn = rng.choice(["count_below", "count_small", "num_below", "count_under", "how_many_below"])
    a = rng.choice(LIST_ARGS)
    k = rng.randint(-3, 12)
    strict = rng.random() < 0.5
    op, wrong = ("<", "<=") if strict else ("<=", "<")
    rel = "less than" if strict else "less than or equal to"
    v = dict(f=fn, a=a, k=k, op=op, wrong=wrong, rel=rel)
    instr = instruction(rng, fn, [a], [
        "returns how many numbers in `{a}` are {rel} {k}.",
        "counts the elements of the list `{a}` that are {rel} {k} and returns that count.",
        "returns the number of items in `{a}` {rel} {k}.",
    ], v, ["Return 0 for an empty list."])

    def ref(xs):
        return sum(1 for x in xs if (x < k if strict else x <= k))

    cases = [([],), ([k],), ([k - 1, k, k + 1, k],), ([k + 4, k + 9],)]
    cases += [(rand_ints(rng, lo=k - 5, hi=k + 5),) for _ in range(3)]
    correct = [
        """
        def $f($a):
            count = 0
            for x in $a:
                if x $op $k:
                    count += 1
            return count
        """,
        """
        def $f($a):
            return sum(1 for x in $a if x $op $k)
        """,
        """
        def $f($a):
            return len([x for x in $a if x $op $k])
        """,
    ]
    buggy = [
        """
        def $f($a):
            return len([x for x in $a if x $wrong $k])
        """,
        """
        def $f($a):
            count = 0
            for x in $a:
                if x $op $k:
                    count += x
            return count
        """,
        """
        def $f($a):
            return [x for x in $a if x $op $k]
        """,
    ]
    return problem("count_threshold", instr, fn, ref, cases, correct, buggy, v, 1)


def product_list(rng: random.Random) -> Problem:
    fn = rng.choice(["product", "prod_list", "multiply_all", "list_product", "product_of"])
    a = rng.choice(LIST_ARGS)
    skip_zero = rng.random() < 0.4
    v = dict(f=fn, a=a)
    if skip_zero:
        instr = instruction(rng, fn, [a], [
            "returns the product of the non-zero numbers in `{a}`.",
            "multiplies together every element of `{a}` except zeros and returns the result.",
        ], v, ["The product of an empty selection is 1."])
    else:
        instr = instruction(rng, fn, [a], [
            "returns the product of all numbers in `{a}`.",
            "multiplies every element of the list `{a}` together and returns the result.",
        ], v, ["The product of an empty list is 1."])

    def ref(xs):
        p = 1
        for x in xs:
            if x or not skip_zero:
                p *= x
        return p

    cases = [([],), ([5],), ([2, 0, 3],), ([-2, 3, 4],), ([1, 1, 7, 2],)]
    cases += [(rand_ints(rng, 2, 5, -4, 6),) for _ in range(2)]
    cond = "if x != 0" if skip_zero else ""
    v["cond"] = cond
    loop_body = "if x != 0:\n            p *= x" if skip_zero else "p *= x"
    v["body"] = loop_body
    correct = [
        """
        def $f($a):
            p = 1
            for x in $a:
                $body
            return p
        """,
        """
        import math

        def $f($a):
            return math.prod(x for x in $a $cond)
        """,
        """
        from functools import reduce

        def $f($a):
            return reduce(lambda acc, x: acc * x, [x for x in $a $cond], 1)
        """,
    ]
    buggy = [
        """
        def $f($a):
            p = 0
            for x in $a:
                $body
            return p
        """,
        """
        def $f($a):
            p = 1
            for i in range(1, len($a)):
                x = $a[i]
                $body
            return p
        """,
        """
        from functools import reduce

        def $f($a):
            return reduce(lambda acc, x: acc * x, [x for x in $a $cond])
        """,
    ]
    return problem("product_list", instr, fn, ref, cases, correct, buggy, v, 1 + skip_zero)


def sum_powers(rng: random.Random) -> Problem:
    p = rng.choice([2, 2, 3, 4])
    word = {2: "squares", 3: "cubes", 4: "fourth powers"}[p]
    fn = rng.choice([f"sum_of_{word.replace(' ', '_')}", "power_sum", f"sum_pow{p}", "sum_powers"])
    a = rng.choice(LIST_ARGS)
    odd_only = rng.random() < 0.3
    v = dict(f=fn, a=a, p=p, word=word, which="odd " if odd_only else "")
    instr = instruction(rng, fn, [a], [
        "returns the sum of the {word} of the {which}numbers in `{a}`.",
        "raises each {which}element of `{a}` to the power {p} and returns the sum.",
    ], v, ["An empty list gives 0."])

    def ref(xs):
        return sum(x ** p for x in xs if (x % 2 == 1 or not odd_only))

    v["cond"] = "if x % 2 == 1" if odd_only else ""
    v["bcond"] = "if x % 2 == 0" if odd_only else "if x > 0"
    add = f"total += pow(x, {p})"
    v["body"] = f"if x % 2 == 1:\n            {add}" if odd_only else add
    cases = [([],), ([3],), ([-2, 1, 2],), ([0, -3, 5],)]
    cases += [(rand_ints(rng, 2, 6, -6, 9),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            return sum(x ** $p for x in $a $cond)
        """,
        """
        def $f($a):
            total = 0
            for x in $a:
                $body
            return total
        """,
    ]
    buggy = [
        """
        def $f($a):
            return sum(x * $p for x in $a $cond)
        """,
        """
        def $f($a):
            return sum(x ** $p for x in $a $bcond)
        """,
        """
        def $f($a):
            return sum(x for x in $a $cond) ** $p
        """,
    ]
    return problem("sum_powers", instr, fn, ref, cases, correct, buggy, v, 1 + odd_only)


def count_parity(rng: random.Random) -> Problem:
    even = rng.random() < 0.5
    kind = "even" if even else "odd"
    fn = rng.choice([f"count_{kind}", f"num_{kind}", f"{kind}_count", f"count_{kind}s"])
    a = rng.choice(LIST_ARGS)
    v = dict(f=fn, a=a, kind=kind, r=0 if even else 1, nr=1 if even else 0)
    instr = instruction(rng, fn, [a], [
        "returns how many {kind} numbers the list `{a}` contains.",
        "counts the {kind} integers in `{a}`.",
        "returns the count of {kind} values in `{a}` (negative numbers included).",
    ], v, ["Zero counts as even."])

    def ref(xs):
        return sum(1 for x in xs if x % 2 == (0 if even else 1))

    cases = [([],), ([0],), ([-3, -2, 7],), ([2, 4, 6, 1],)]
    cases += [(rand_ints(rng, 3, 8, -9, 9),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            return sum(1 for x in $a if x % 2 == $r)
        """,
        """
        def $f($a):
            c = 0
            for x in $a:
                if x % 2 == $r:
                    c += 1
            return c
        """,
        """
        def $f($a):
            return len([x for x in $a if x % 2 == $r])
        """,
    ]
    buggy = [
        """
        def $f($a):
            return sum(1 for x in $a if x % 2 == $nr)
        """,
        """
        def $f($a):
            return sum(1 for x in $a if x > 0 and x % 2 == $r)
        """,
        """
        def $f($a):
            c = 1
            for x in $a:
                if x % 2 == $r:
                    c += 1
            return c
        """,
    ]
    return problem("count_parity", instr, fn, ref, cases, correct, buggy, v, 1)


def index_of_extreme(rng: random.Random) -> Problem:
    use_max = rng.random() < 0.5
    word = "largest" if use_max else "smallest"
    fn = rng.choice([f"index_of_{'max' if use_max else 'min'}", f"arg{'max' if use_max else 'min'}",
                     f"position_of_{word}", f"find_{word}_index"])
    a = rng.choice(LIST_ARGS)
    op, eq = (">", ">=") if use_max else ("<", "<=")
    v = dict(f=fn, a=a, word=word, op=op, eq=eq, m="max" if use_max else "min")
    instr = instruction(rng, fn, [a], [
        "returns the index of the {word} value in `{a}`; if it occurs several times, return the first index.",
        "returns the position of the first occurrence of the {word} element of the list `{a}`.",
    ], v, ["Return -1 for an empty list.", "An empty list has no such index: return -1."])

    def ref(xs):
        if not xs:
            return -1
        return xs.index(max(xs) if use_max else min(xs))

    cases = [([],), ([7],), ([-5, -2, -9],), ([3, 9, 9, 1, 0, 3],), ([4, 1, 4, 1],)]
    cases += [(rand_ints(rng, 3, 8, -9, 9),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            if not $a:
                return -1
            best = 0
            for i in range(1, len($a)):
                if $a[i] $op $a[best]:
                    best = i
            return best
        """,
        """
        def $f($a):
            if not $a:
                return -1
            return $a.index($m($a))
        """,
        """
        def $f($a):
            return $a.index($m($a)) if $a else -1
        """,
    ]
    buggy = [
        """
        def $f($a):
            if not $a:
                return -1
            best = 0
            for i in range(1, len($a)):
                if $a[i] $eq $a[best]:
                    best = i
            return best
        """,
        """
        def $f($a):
            best = 0
            for i in range(1, len($a)):
                if $a[i] $op $a[best]:
                    best = i
            return best
        """,
        """
        def $f($a):
            best_i, best = -1, 0
            for i, x in enumerate($a):
                if x $op best:
                    best_i, best = i, x
            return best_i
        """,
    ]
    return problem("index_of_extreme", instr, fn, ref, cases, correct, buggy, v, 2)


FAMILIES = (sum_threshold, count_threshold, product_list, sum_powers, count_parity, index_of_extreme)
