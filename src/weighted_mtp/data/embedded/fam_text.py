"""String families that count or compare: character/word frequencies, longest word, anagrams,
overlapping substring counts, character removal."""

from __future__ import annotations

import random

from weighted_mtp.data.embedded.base import (
    STR_ARGS, Problem, instruction, problem, rand_sentence, rand_word,
)


def char_frequency(rng: random.Random) -> Problem:
    skip_spaces = rng.random() < 0.5
    fn = rng.choice(["char_counts", "char_frequency", "letter_counts", "count_chars", "histogram"])
    s = rng.choice(STR_ARGS)
    v = dict(f=fn, s=s, cond="if c != \" \"" if skip_spaces else "")
    extra = " Spaces are not counted." if skip_spaces else " Every character counts, spaces included."
    instr = instruction(rng, fn, [s], [
        "returns a dictionary mapping each character of `{s}` to the number of times it occurs." + extra,
        "counts the occurrences of every character in `{s}` and returns them as a dict." + extra,
    ], v, ["The empty string gives an empty dict."])

    def ref(t):
        d: dict[str, int] = {}
        for c in t:
            if c != " " or not skip_spaces:
                d[c] = d.get(c, 0) + 1
        return d

    cases = [("",), ("aab",), ("a b a",), ("  ",), (rand_sentence(rng, 2, 3),)]
    body = "if c != \" \":\n            d[c] = d.get(c, 0) + 1" if skip_spaces else "d[c] = d.get(c, 0) + 1"
    v["body"] = body
    v["bad_body"] = body.replace("d.get(c, 0) + 1", "1")
    correct = [
        """
        def $f($s):
            d = {}
            for c in $s:
                $body
            return d
        """,
        """
        from collections import Counter

        def $f($s):
            return dict(Counter(c for c in $s $cond))
        """,
        """
        def $f($s):
            return {c: $s.count(c) for c in $s $cond}
        """,
    ]
    buggy = [
        """
        def $f($s):
            d = {}
            for c in $s:
                $bad_body
            return d
        """,
        """
        from collections import Counter

        def $f($s):
            return Counter(c for c in $s $cond).most_common()
        """,
        """
        def $f($s):
            return {c: $s.count(c) for c in $s.strip()}
        """ if skip_spaces else """
        def $f($s):
            return {c: $s.count(c) for c in $s if c.strip()}
        """,
    ]
    return problem("char_frequency", instr, fn, ref, cases, correct, buggy, v, 2)


def word_count(rng: random.Random) -> Problem:
    fn = rng.choice(["word_counts", "count_words", "word_frequency", "tally_words", "word_histogram", "words_count", "count_each_word"])
    s = rng.choice(STR_ARGS)
    v = dict(f=fn, s=s)
    instr = instruction(rng, fn, [s], [
        "returns a dict mapping each word of `{s}` (lower-cased; words are separated by whitespace) to how many times it appears.",
        "counts the words in `{s}` case-insensitively and returns a dictionary from lower-case word to count. Split on any whitespace.",
    ], v, ["Return an empty dict for a string with no words."])

    def ref(t):
        d: dict[str, int] = {}
        for w in t.lower().split():
            d[w] = d.get(w, 0) + 1
        return d

    words = [rand_word(rng, 2, 4) for _ in range(3)]
    mixed = " ".join(rng.choice(words) for _ in range(6))
    cases = [("",), ("a A a",), ("the cat  the Hat",), ("  spaced   out  ",), (mixed,), (mixed.upper(),)]
    correct = [
        """
        def $f($s):
            counts = {}
            for w in $s.lower().split():
                counts[w] = counts.get(w, 0) + 1
            return counts
        """,
        """
        from collections import Counter

        def $f($s):
            return dict(Counter($s.lower().split()))
        """,
        """
        from collections import defaultdict

        def $f($s):
            counts = defaultdict(int)
            for w in $s.split():
                counts[w.lower()] += 1
            return dict(counts)
        """,
    ]
    buggy = [
        """
        def $f($s):
            counts = {}
            for w in $s.split():
                counts[w] = counts.get(w, 0) + 1
            return counts
        """,
        """
        from collections import Counter

        def $f($s):
            return dict(Counter($s.lower().split(" ")))
        """,
        """
        def $f($s):
            counts = {}
            for w in $s.lower().split():
                counts[w] = 1
            return counts
        """,
    ]
    return problem("word_count", instr, fn, ref, cases, correct, buggy, v, 2)


def longest_word(rng: random.Random) -> Problem:
    first = rng.random() < 0.6
    which = "first" if first else "last"
    fn = rng.choice(["longest_word", "find_longest", "max_word", "longest"])
    s = rng.choice(STR_ARGS)
    v = dict(f=fn, s=s, which=which, op=">" if first else ">=", bad=">=" if first else ">")
    instr = instruction(rng, fn, [s], [
        "returns the longest word in `{s}` (words are separated by whitespace); if several words share the maximum length, return the {which} of them.",
        "finds the word of greatest length in the string `{s}`, returning the {which} one on ties.",
    ], v, ["Return an empty string if `{s}` has no words."])

    def ref(t):
        best = ""
        for w in t.split():
            if len(w) > len(best) or (not first and len(w) == len(best)):
                best = w
        return best

    cases = [("",), ("one",), ("aa bb cc",), ("hi there you",), ("  a bcd efg h ",), (rand_sentence(rng, 3, 6),)]
    correct = [
        """
        def $f($s):
            best = ""
            for w in $s.split():
                if len(w) $op len(best):
                    best = w
            return best
        """,
    ]
    if first:
        correct.append("""
        def $f($s):
            return max($s.split(), key=len, default="")
        """)
    else:
        correct.append("""
        def $f($s):
            return max(reversed($s.split()), key=len, default="")
        """)
    buggy = [
        """
        def $f($s):
            best = ""
            for w in $s.split():
                if len(w) $bad len(best):
                    best = w
            return best
        """,
        """
        def $f($s):
            return max($s.split(), key=len)
        """ if first else """
        def $f($s):
            return max(reversed($s.split()), key=len)
        """,
        """
        def $f($s):
            return len(max($s.split(), key=len, default=""))
        """,
    ]
    return problem("longest_word", instr, fn, ref, cases, correct, buggy, v, 2)


def remove_chars(rng: random.Random) -> Problem:
    mode = rng.choice(["vowels", "digits", "char"])
    ch = rng.choice("aeilnorst")
    s = rng.choice(STR_ARGS)
    if mode == "vowels":
        fn = rng.choice(["remove_vowels", "strip_vowels", "drop_vowels", "devowel"])
        keep, bad, what = 'c.lower() not in "aeiou"', 'c not in "aeiou"', "every vowel (a, e, i, o, u, in either case)"
        pred = lambda c: c.lower() not in "aeiou"  # noqa: E731
    elif mode == "digits":
        fn = rng.choice(["remove_digits", "strip_digits", "drop_numbers", "letters_only"])
        keep, bad, what = "not c.isdigit()", "not c.isnumeric() and c != \" \"", "every digit 0-9"
        pred = lambda c: not c.isdigit()  # noqa: E731
    else:
        fn = rng.choice([f"remove_{ch}", f"drop_{ch}", f"strip_{ch}s", f"without_{ch}"])
        keep, bad, what = f'c.lower() != "{ch}"', f'c != "{ch}"', f"every '{ch}' and '{ch.upper()}'"
        pred = lambda c: c.lower() != ch  # noqa: E731
    v = dict(f=fn, s=s, keep=keep, bad=bad, what=what)
    instr = instruction(rng, fn, [s], [
        "returns `{s}` with {what} removed; all other characters stay in order.",
        "deletes {what} from the string `{s}` and returns what is left.",
    ], v)

    def ref(t):
        return "".join(c for c in t if pred(c))

    cases = [("",), ("AEIOU aeiou",), ("b4n4n4 r3public",), (f"{ch}{ch.upper()}x{ch}",), ("Room 101, Level 7",),
             (rand_sentence(rng, 2, 4),)]
    correct = [
        """
        def $f($s):
            return "".join(c for c in $s if $keep)
        """,
        """
        def $f($s):
            out = ""
            for c in $s:
                if $keep:
                    out += c
            return out
        """,
    ]
    buggy = [
        """
        def $f($s):
            return "".join(c for c in $s if $bad)
        """,
        """
        def $f($s):
            return [c for c in $s if $keep]
        """,
        """
        def $f($s):
            out = ""
            for c in $s[:-1]:
                if $keep:
                    out += c
            return out
        """,
    ]
    return problem("remove_chars", instr, fn, ref, cases, correct, buggy, v, 1)


def anagram(rng: random.Random) -> Problem:
    fn = rng.choice(["is_anagram", "are_anagrams", "anagrams", "same_letters", "check_anagram", "is_permutation", "anagram_pair"])
    a, b = rng.choice([("a", "b"), ("s1", "s2"), ("first", "second"), ("word1", "word2"), ("x", "y"), ("left", "right")])
    v = dict(f=fn, a=a, b=b)
    instr = instruction(rng, fn, [a, b], [
        "returns True if `{a}` and `{b}` are anagrams of each other, ignoring case and spaces, and False otherwise.",
        "checks whether the strings `{a}` and `{b}` use exactly the same letters the same number of times (case-insensitive, spaces ignored).",
    ], v)

    def norm(t):
        return sorted(t.replace(" ", "").lower())

    def ref(x, y):
        return norm(x) == norm(y)

    w = rand_word(rng, 4, 7)
    cases = [("", ""), ("listen", "silent"), ("Dormitory", "dirty room"), ("aab", "abb"), ("abc", "abcd"),
             (w, "".join(sorted(w, reverse=True))), (w, w + w[0])]
    correct = [
        """
        def $f($a, $b):
            def key(t):
                return sorted(t.replace(" ", "").lower())
            return key($a) == key($b)
        """,
        """
        from collections import Counter

        def $f($a, $b):
            return Counter($a.lower().replace(" ", "")) == Counter($b.lower().replace(" ", ""))
        """,
    ]
    buggy = [
        """
        def $f($a, $b):
            return set($a.lower().replace(" ", "")) == set($b.lower().replace(" ", ""))
        """,
        """
        def $f($a, $b):
            return sorted($a.lower()) == sorted($b.lower())
        """,
        """
        def $f($a, $b):
            return sorted($a.replace(" ", "")) == sorted($b.replace(" ", ""))
        """,
    ]
    return problem("anagram", instr, fn, ref, cases, correct, buggy, v, 2)


def count_overlapping(rng: random.Random) -> Problem:
    fn = rng.choice(["count_occurrences", "count_substring", "occurrences", "count_matches", "overlap_count", "find_all_count", "count_overlapping"])
    s, p = rng.choice([("s", "sub"), ("text", "pattern"), ("haystack", "needle"), ("string", "part"), ("line", "word"), ("source", "target")])
    v = dict(f=fn, s=s, p=p)
    instr = instruction(rng, fn, [s, p], [
        "returns how many times the non-empty string `{p}` occurs in `{s}`, counting overlapping occurrences (so \"aa\" occurs twice in \"aaa\").",
        "counts every position at which `{p}` appears in `{s}`, overlaps included, and returns that count.",
    ], v)

    def ref(t, q):
        return sum(1 for i in range(len(t) - len(q) + 1) if t[i:i + len(q)] == q)

    w = rand_word(rng, 1, 2, "ab")
    cases = [("", "a"), ("aaa", "aa"), ("abababa", "aba"), ("hello", "l"), ("abc", "abcd"), ("abc", "abc"),
             ("".join(rng.choice("ab") for _ in range(9)), w)]
    correct = [
        """
        def $f($s, $p):
            return sum(1 for i in range(len($s) - len($p) + 1) if $s[i:i + len($p)] == $p)
        """,
        """
        def $f($s, $p):
            count = 0
            for i in range(len($s)):
                if $s.startswith($p, i):
                    count += 1
            return count
        """,
        """
        def $f($s, $p):
            count, i = 0, $s.find($p)
            while i != -1:
                count += 1
                i = $s.find($p, i + 1)
            return count
        """,
    ]
    buggy = [
        """
        def $f($s, $p):
            return $s.count($p)
        """,
        """
        def $f($s, $p):
            return sum(1 for i in range(len($s) - len($p)) if $s[i:i + len($p)] == $p)
        """,
        """
        def $f($s, $p):
            count, i = 0, $s.find($p)
            while i != -1:
                count += 1
                i = $s.find($p, i + len($p))
            return count
        """,
    ]
    return problem("count_overlapping", instr, fn, ref, cases, correct, buggy, v, 3)


FAMILIES = (char_frequency, word_count, longest_word, remove_chars, anagram, count_overlapping)
