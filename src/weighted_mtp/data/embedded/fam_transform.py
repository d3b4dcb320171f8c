"""List families that return a new list: filters, prefix scans, clamping, differences."""

from __future__ import annotations

import random

from weighted_mtp.data.embedded.base import LIST_ARGS, Problem, instruction, problem, rand_ints


def filter_multiples(rng: random.Random) -> Problem:
    k = rng.randint(2, 9)
    keep = rng.random() < 0.65
    fn = rng.choice([f"multiples_of_{k}", f"keep_div_{k}", "filter_multiples", "select_multiples"]
                    if keep else [f"drop_multiples_of_{k}", f"remove_div_{k}", "without_multiples", "reject_multiples"])
    a = rng.choice(LIST_ARGS)
    v = dict(f=fn, a=a, k=k, eq="==" if keep else "!=", neq="!=" if keep else "==",
             what="divisible" if keep else "not divisible")
    instr = instruction(rng, fn, [a], [
        "returns a new list with the elements of `{a}` that are {what} by {k}, in their original order.",
        "keeps only the numbers in `{a}` that are {what} by {k} and returns them as a list (order preserved).",
    ], v, ["Do not modify the input list.", "Duplicates are kept."])

    def ref(xs):
        return [x for x in xs if (x % k == 0) == keep]

    cases = [([],), ([k],), ([0, 1, k, 2 * k, k + 1],), ([-k, k * 3, 5 * k + 1],)]
    cases += [(rand_ints(rng, 4, 9, -10, 30),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            return [x for x in $a if x % $k $eq 0]
        """,
        """
        def $f($a):
            out = []
            for x in $a:
                if x % $k $eq 0:
                    out.append(x)
            return out
        """,
        """
        def $f($a):
            return list(filter(lambda x: x % $k $eq 0, $a))
        """,
    ]
    buggy = [
        """
        def $f($a):
            return [x for x in $a if x % $k $neq 0]
        """,
        """
        def $f($a):
            return sorted(x for x in $a if x % $k $eq 0)
        """,
        """
        def $f($a):
            out = []
            for i in range(1, len($a)):
                if $a[i] % $k $eq 0:
                    out.append($a[i])
            return out
        """,
        """
        def $f($a):
            return [x for x in $a if x // $k $eq 0]
        """,
    ]
    return problem("filter_multiples", instr, fn, ref, cases, correct, buggy, v, 1)


def running_extreme(rng: random.Random) -> Problem:
    use_max = rng.random() < 0.6
    m = "max" if use_max else "min"
    fn = rng.choice([f"running_{m}", f"prefix_{m}", f"cumulative_{m}", f"{m}_so_far"])
    a = rng.choice(LIST_ARGS)
    op = ">" if use_max else "<"
    v = dict(f=fn, a=a, m=m, op=op, word="maximum" if use_max else "minimum", init=0)
    instr = instruction(rng, fn, [a], [
        "returns a list whose i-th element is the {word} of `{a}[0]` through `{a}[i]`.",
        "returns the running {word} of the list `{a}`: element i of the result is the {word} of the first i + 1 values.",
    ], v, ["An empty list gives an empty list.", "The input may contain negative numbers."])

    def ref(xs):
        out, best = [], None
        for x in xs:
            best = x if best is None else (max(best, x) if use_max else min(best, x))
            out.append(best)
        return out

    cases = [([],), ([4],), ([-3, -7, -1],), ([1, 3, 2, 5, 4],), ([5, 4, 3, 6],)]
    cases += [(rand_ints(rng, 4, 8, -9, 9),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            out = []
            for x in $a:
                out.append(x if not out else $m(out[-1], x))
            return out
        """,
        """
        from itertools import accumulate

        def $f($a):
            return list(accumulate($a, $m))
        """,
        """
        def $f($a):
            result = []
            best = None
            for x in $a:
                if best is None or x $op best:
                    best = x
                result.append(best)
            return result
        """,
    ]
    buggy = [
        """
        def $f($a):
            out = []
            best = $init
            for x in $a:
                best = $m(best, x)
                out.append(best)
            return out
        """,
        """
        def $f($a):
            best = $a[0]
            out = []
            for x in $a:
                best = $m(best, x)
                out.append(best)
            return out
        """,
        """
        def $f($a):
            out = []
            best = None
            for x in $a:
                if best is None or x $op best:
                    out.append(x)
                    best = x
            return out
        """,
    ]
    return problem("running_extreme", instr, fn, ref, cases, correct, buggy, v, 2)


def prefix_sums(rng: random.Random) -> Problem:
    fn = rng.choice(["prefix_sums", "running_total", "cumulative_sum", "partial_sums", "cumsum"])
    a = rng.choice(LIST_ARGS)
    start = rng.choice([0, 0, 0, 1, 5, 10, -3])
    v = dict(f=fn, a=a, start=start, start1=start + 1)
    if start:
        phrases = ["returns the running totals of `{a}`, starting from an initial value of {start}: element i of the result is {start} plus the sum of `{a}[0]` through `{a}[i]`."]
    else:
        phrases = ["returns the list of running totals of `{a}`: element i is the sum of `{a}[0]` through `{a}[i]`.",
                   "returns the prefix sums of the list `{a}` (same length as the input)."]
    instr = instruction(rng, fn, [a], phrases, v, ["An empty list gives an empty list."])

    def ref(xs):
        out, t = [], start
        for x in xs:
            t += x
            out.append(t)
        return out

    cases = [([],), ([7],), ([1, 2, 3],), ([-2, 5, -1, 0],)]
    cases += [(rand_ints(rng, 3, 7, -9, 9),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            out = []
            total = $start
            for x in $a:
                total += x
                out.append(total)
            return out
        """,
        """
        def $f($a):
            return [$start + sum($a[:i + 1]) for i in range(len($a))]
        """,
        """
        from itertools import accumulate

        def $f($a):
            return [$start + t for t in accumulate($a)]
        """,
    ]
    buggy = [
        """
        def $f($a):
            return [$start + sum($a[:i]) for i in range(len($a))]
        """,
        """
        def $f($a):
            out = []
            total = $start1
            for x in $a:
                total += x
                out.append(total)
            return out
        """,
        """
        def $f($a):
            out = [$start]
            for x in $a:
                out.append(out[-1] + x)
            return out
        """,
    ]
    return problem("prefix_sums", instr, fn, ref, cases, correct, buggy, v, 1 + (start != 0))


def clamp_values(rng: random.Random) -> Problem:
    lo = rng.randint(-5, 5)
    hi = lo + rng.randint(2, 12)
    fn = rng.choice(["clamp_all", "clip_values", "clamp_list", "bound_values", "limit_range"])
    a = rng.choice(LIST_ARGS)
    v = dict(f=fn, a=a, lo=lo, hi=hi)
    instr = instruction(rng, fn, [a], [
        "returns a new list where every element of `{a}` is clamped to the range [{lo}, {hi}]: values below {lo} become {lo} and values above {hi} become {hi}.",
        "limits each number in `{a}` to lie between {lo} and {hi} inclusive, and returns the resulting list.",
    ], v, ["The order of elements is kept.", "Values already inside the range are unchanged."])

    def ref(xs):
        return [min(max(x, lo), hi) for x in xs]

    cases = [([],), ([lo - 1, lo, hi, hi + 1],), ([lo - 10, hi + 10],), ([(lo + hi) // 2],)]
    cases += [(rand_ints(rng, 3, 8, lo - 8, hi + 8),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            return [min(max(x, $lo), $hi) for x in $a]
        """,
        """
        def $f($a):
            out = []
            for x in $a:
                if x < $lo:
                    x = $lo
                elif x > $hi:
                    x = $hi
                out.append(x)
            return out
        """,
        """
        def $f($a):
            return [$lo if x < $lo else $hi if x > $hi else x for x in $a]
        """,
    ]
    buggy = [
        """
        def $f($a):
            return [max(min(x, $lo), $hi) for x in $a]
        """,
        """
        def $f($a):
            return [min(x, $hi) for x in $a]
        """,
        """
        def $f($a):
            out = []
            for x in $a:
                if x < $lo:
                    out.append($lo)
                elif x > $hi:
                    out.append($hi)
            return out
        """,
    ]
    return problem("clamp_values", instr, fn, ref, cases, correct, buggy, v, 1)


def adjacent_diffs(rng: random.Random) -> Problem:
    absolute = rng.random() < 0.35
    fn = rng.choice(["differences", "adjacent_diffs", "deltas", "pairwise_diff", "steps"])
    a = rng.choice(LIST_ARGS)
    v = dict(f=fn, a=a, what="absolute differences" if absolute else "differences")
    if absolute:
        phrases = ["returns the list of absolute differences between consecutive elements of `{a}`.",
                   "returns `abs({a}[i + 1] - {a}[i])` for every adjacent pair, as a list."]
        v.update(e="abs(b - a_)", eb="b - a_", ei="abs({a}[i + 1] - {a}[i])".format(a=a))
    else:
        phrases = ["returns the list of differences `{a}[i + 1] - {a}[i]` between consecutive elements.",
                   "returns how much each element of `{a}` changed from the previous one, as a list one shorter than the input."]
        v.update(e="b - a_", eb="a_ - b", ei="{a}[i + 1] - {a}[i]".format(a=a))
    instr = instruction(rng, fn, [a], phrases, v, ["Lists with fewer than two elements give an empty list."])

    def ref(xs):
        return [abs(y - x) if absolute else y - x for x, y in zip(xs, xs[1:])]

    cases = [([],), ([3],), ([1, 4, 2],), ([5, 5, -2, 7],)]
    cases += [(rand_ints(rng, 3, 7, -9, 15),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            return [$e for a_, b in zip($a, $a[1:])]
        """,
        """
        def $f($a):
            out = []
            for i in range(len($a) - 1):
                out.append($ei)
            return out
        """,
    ]
    buggy = [
        """
        def $f($a):
            return [$eb for a_, b in zip($a, $a[1:])]
        """,
        """
        def $f($a):
            out = []
            for i in range(len($a)):
                out.append($ei)
            return out
        """,
        """
        def $f($a):
            return [$e for a_, b in zip($a, $a[2:])]
        """,
    ]
    if absolute:
        buggy[0] = """
        def $f($a):
            return [abs(b) - abs(a_) for a_, b in zip($a, $a[1:])]
        """
    return problem("adjacent_diffs", instr, fn, ref, cases, correct, buggy, v, 1 + absolute)


FAMILIES = (filter_multiples, running_extreme, prefix_sums, clamp_values, adjacent_diffs)
