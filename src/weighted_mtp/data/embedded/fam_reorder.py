"""List families about order and structure: rotation, de-duplication, chunking, merging, ranks."""

from __future__ import annotations

import random

from weighted_mtp.data.embedded.base import LIST_ARGS, Problem, instruction, problem, rand_ints


def rotate_list(rng: random.Random) -> Problem:
    left = rng.random() < 0.5
    d = "left" if left else "right"
    fn = rng.choice([f"rotate_{d}", f"rot_{d}", f"shift_{d}", f"cycle_{d}"])
    a = rng.choice(LIST_ARGS)
    k = rng.choice(["k", "steps", "n", "by"])
    v = dict(f=fn, a=a, k=k, d=d)
    instr = instruction(rng, fn, [a, k], [
        "returns a new list with the elements of `{a}` rotated {d} by `{k}` positions.",
        "rotates the list `{a}` to the {d} by `{k}` steps and returns the result (the input is not modified).",
    ], v, ["`{k}` may be larger than the length of the list.", "An empty list stays empty for any `{k}`."])

    def ref(xs, r):
        if not xs:
            return []
        r %= len(xs)
        return xs[r:] + xs[:r] if left else xs[len(xs) - r:] + xs[:len(xs) - r]

    base = rand_ints(rng, 4, 7, 0, 9)
    cases = [([], 3), ([1, 2, 3, 4, 5], 1), ([1, 2, 3, 4, 5], 0), ([1, 2, 3], 4),
             (base, rng.randint(1, 3)), (base, len(base) + 2), ([9], 5)]
    if left:
        v.update(s1=f"{a}[r:] + {a}[:r]", rot=f"-{k}")
    else:
        v.update(s1=f"{a}[-r:] + {a}[:-r] if r else list({a})", rot=k)
    correct = [
        """
        def $f($a, $k):
            if not $a:
                return []
            r = $k % len($a)
            return $s1
        """,
        """
        from collections import deque

        def $f($a, $k):
            d = deque($a)
            d.rotate($rot)
            return list(d)
        """,
        """
        def $f($a, $k):
            out = list($a)
            for _ in range($k % len($a) if $a else 0):
                PLACEHOLDER
            return out
        """.replace("PLACEHOLDER", "out.append(out.pop(0))" if left else "out.insert(0, out.pop())"),
    ]
    buggy = [
        """
        def $f($a, $k):
            r = $k
            return $s1
        """,
        """
        def $f($a, $k):
            r = $k % len($a)
            return $s1
        """,
        """
        from collections import deque

        def $f($a, $k):
            d = deque($a)
            d.rotate(BADROT)
            return list(d)
        """.replace("BADROT", k if left else f"-{k}"),
    ]
    return problem("rotate_list", instr, fn, ref, cases, correct, buggy, v, 2)


def second_largest(rng: random.Random) -> Problem:
    largest = rng.random() < 0.6
    word = "largest" if largest else "smallest"
    fn = rng.choice([f"second_{word}", f"runner_up_{'max' if largest else 'min'}", f"next_{word}"])
    a = rng.choice(LIST_ARGS)
    v = dict(f=fn, a=a, word=word, rev="True" if largest else "False", idx=-2 if largest else 1,
             op=">" if largest else "<", m="max" if largest else "min")
    instr = instruction(rng, fn, [a], [
        "returns the second {word} distinct value in `{a}`, or None if there are fewer than two distinct values.",
        "finds the second {word} number in `{a}`, ignoring duplicates; return None when it does not exist.",
    ], v)

    def ref(xs):
        u = sorted(set(xs), reverse=largest)
        return u[1] if len(u) >= 2 else None

    cases = [([],), ([4],), ([4, 4],), ([3, 1, 2],), ([5, 5, 4, 1],), ([1, 1, 2, 2, -3],)]
    cases += [(rand_ints(rng, 4, 8, -9, 9),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            u = sorted(set($a), reverse=$rev)
            return u[1] if len(u) >= 2 else None
        """,
        """
        def $f($a):
            first = second = None
            for x in $a:
                if first is None or x $op first:
                    first, second = x, first
                elif x != first and (second is None or x $op second):
                    second = x
            return second
        """,
        """
        def $f($a):
            rest = [x for x in $a if x != $m($a)] if $a else []
            return $m(rest) if rest else None
        """,
    ]
    buggy = [
        """
        def $f($a):
            u = sorted($a, reverse=$rev)
            return u[1] if len(u) >= 2 else None
        """,
        """
        def $f($a):
            u = sorted(set($a), reverse=$rev)
            return u[1]
        """,
        """
        def $f($a):
            first = second = None
            for x in $a:
                if first is None or x $op first:
                    first = x
                elif second is None or x $op second:
                    second = x
            return second
        """,
    ]
    return problem("second_largest", instr, fn, ref, cases, correct, buggy, v, 3)


def dedupe_keep_order(rng: random.Random) -> Problem:
    fn = rng.choice(["unique", "dedupe", "remove_duplicates", "distinct", "uniq_in_order"])
    a = rng.choice(LIST_ARGS)
    v = dict(f=fn, a=a)
    instr = instruction(rng, fn, [a], [
        "returns the elements of `{a}` with duplicates removed, keeping the first occurrence of each and the original order.",
        "removes repeated values from the list `{a}` and returns a new list in which each value appears once, in order of first appearance.",
    ], v, ["Do not sort the result.", "The input may be empty."])

    def ref(xs):
        return list(dict.fromkeys(xs))

    cases = [([],), ([3, 3, 3],), ([5, 1, 5, 2, 1],), ([9, 8, 7],), ([2, 1, 2, 1, 3],)]
    cases += [(rand_ints(rng, 5, 9, 0, 6),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            seen = set()
            out = []
            for x in $a:
                if x not in seen:
                    seen.add(x)
                    out.append(x)
            return out
        """,
        """
        def $f($a):
            return list(dict.fromkeys($a))
        """,
        """
        def $f($a):
            return [x for i, x in enumerate($a) if x not in $a[:i]]
        """,
    ]
    buggy = [
        """
        def $f($a):
            return list(set($a))
        """,
        """
        def $f($a):
            return [x for i, x in enumerate($a) if x not in $a[i + 1:]]
        """,
        """
        def $f($a):
            out = []
            for i in range(1, len($a)):
                if $a[i] != $a[i - 1]:
                    out.append($a[i])
            return out
        """,
    ]
    return problem("dedupe_keep_order", instr, fn, ref, cases, correct, buggy, v, 2)


def chunk_list(rng: random.Random) -> Problem:
    size = rng.randint(2, 5)
    fn = rng.choice([f"chunks_of_{size}", "chunk", "split_into_groups", "batches", f"group_by_{size}"])
    a = rng.choice(LIST_ARGS)
    v = dict(f=fn, a=a, size=size)
    instr = instruction(rng, fn, [a], [
        "splits `{a}` into consecutive groups of {size} elements and returns the list of groups (lists); the last group may be shorter.",
        "returns `{a}` cut into chunks of length {size}, in order, keeping a shorter final chunk if the length is not a multiple of {size}.",
    ], v, ["An empty list gives an empty list of chunks."])

    def ref(xs):
        return [xs[i:i + size] for i in range(0, len(xs), size)]

    cases = [([],), (list(range(size)),), (list(range(size * 2 + 1)),), (list(range(1, size)),)]
    cases += [(rand_ints(rng, size + 1, 3 * size + 2, 0, 9),) for _ in range(2)]
    correct = [
        """
        def $f($a):
            return [$a[i:i + $size] for i in range(0, len($a), $size)]
        """,
        """
        def $f($a):
            out = []
            for x in $a:
                if not out or len(out[-1]) == $size:
                    out.append([])
                out[-1].append(x)
            return out
        """,
    ]
    buggy = [
        """
        def $f($a):
            return [$a[i:i + $size] for i in range(0, len($a) - $size, $size)]
        """,
        """
        def $f($a):
            return [$a[i * $size:(i + 1) * $size] for i in range(len($a) // $size)]
        """,
        """
        def $f($a):
            return [$a[i:i + $size] for i in range(len($a))]
        """,
    ]
    return problem("chunk_list", instr, fn, ref, cases, correct, buggy, v, 2)


def merge_sorted(rng: random.Random) -> Problem:
    fn = rng.choice(["merge_sorted", "merge", "merge_lists", "combine_sorted", "merge_two", "sorted_merge", "join_sorted"])
    a, b = rng.choice([("a", "b"), ("xs", "ys"), ("left", "right"), ("first", "second"), ("l1", "l2"), ("p", "q")])
    v = dict(f=fn, a=a, b=b)
    instr = instruction(rng, fn, [a, b], [
        "takes two lists `{a}` and `{b}`, each sorted in ascending order, and returns one sorted list with all their elements.",
        "merges the ascending lists `{a}` and `{b}` into a single ascending list (duplicates kept).",
    ], v, ["Either list may be empty."])

    def ref(x, y):
        return sorted(x + y)

    def srt(lo, hi):
        return sorted(rand_ints(rng, lo, hi, -5, 15))

    cases = [([], []), ([1, 3], []), ([], [2]), ([1, 4, 9], [2, 3, 10, 11]), ([5, 5], [5])]
    cases += [(srt(1, 5), srt(1, 5)) for _ in range(2)]
    correct = [
        """
        def $f($a, $b):
            out = []
            i = j = 0
            while i < len($a) and j < len($b):
                if $a[i] <= $b[j]:
                    out.append($a[i])
                    i += 1
                else:
                    out.append($b[j])
                    j += 1
            return out + $a[i:] + $b[j:]
        """,
        """
        def $f($a, $b):
            return sorted($a + $b)
        """,
        """
        import heapq

        def $f($a, $b):
            return list(heapq.merge($a, $b))
        """,
    ]
    buggy = [
        """
        def $f($a, $b):
            out = []
            i = j = 0
            while i < len($a) and j < len($b):
                if $a[i] <= $b[j]:
                    out.append($a[i])
                    i += 1
                else:
                    out.append($b[j])
                    j += 1
            return out
        """,
        """
        def $f($a, $b):
            return $a + $b
        """,
        """
        def $f($a, $b):
            return sorted(set($a + $b))
        """,
    ]
    return problem("merge_sorted", instr, fn, ref, cases, correct, buggy, v, 3)


FAMILIES = (rotate_list, second_largest, dedupe_keep_order, chunk_list, merge_sorted)
