"""String families that transform or test one string: words, palindromes, RLE, ciphers, case."""

from __future__ import annotations

import random

from weighted_mtp.data.embedded.base import (
    STR_ARGS, Problem, instruction, problem, rand_sentence, rand_word,
)


def reverse_words(rng: random.Random) -> Problem:
    fn = rng.choice(["reverse_words", "flip_words", "words_backwards", "reverse_word_order", "backwards_sentence", "invert_words", "words_reversed"])
    s = rng.choice(STR_ARGS)
    v = dict(f=fn, s=s)
    instr = instruction(rng, fn, [s], [
        "returns the words of the string `{s}` in reverse order, joined by single spaces.",
        "reverses the order of the words in `{s}` (words are separated by whitespace) and returns the new string with one space between words.",
    ], v, ["Leading, trailing and repeated spaces are dropped.", "The letters inside each word are not reversed."])

    def ref(t):
        return " ".join(reversed(t.split()))

    cases = [("",), ("hello",), ("one two three",), ("  many   spaces here ",)]
    cases += [(rand_sentence(rng),) for _ in range(2)]
    correct = [
        """
        def $f($s):
            return " ".join(reversed($s.split()))
        """,
        """
        def $f($s):
            return " ".join($s.split()[::-1])
        """,
        """
        def $f($s):
            words = []
            for w in $s.split():
                words.insert(0, w)
            return " ".join(words)
        """,
    ]
    buggy = [
        """
        def $f($s):
            return $s[::-1]
        """,
        """
        def $f($s):
            return " ".join($s.split(" ")[::-1])
        """,
        """
        def $f($s):
            return " ".join(w[::-1] for w in $s.split())
        """,
    ]
    return problem("reverse_words", instr, fn, ref, cases, correct, buggy, v, 1)


def palindrome(rng: random.Random) -> Problem:
    loose = rng.random() < 0.5
    fn = rng.choice(["is_palindrome", "palindrome", "reads_same_backwards", "check_palindrome"])
    s = rng.choice(STR_ARGS)
    v = dict(f=fn, s=s)
    if loose:
        phrases = ["returns True if `{s}` is a palindrome when case and every non-alphanumeric character are ignored, and False otherwise.",
                   "checks whether `{s}` reads the same forwards and backwards, considering only letters and digits and ignoring case."]
        notes = ["For example, \"A man, a plan, a canal: Panama\" is a palindrome."]
    else:
        phrases = ["returns True if the string `{s}` reads exactly the same forwards and backwards (case-sensitive), else False.",
                   "checks whether `{s}` is a palindrome, comparing characters exactly."]
        notes = ["The empty string is a palindrome."]
    instr = instruction(rng, fn, [s], phrases, v, notes)

    def ref(t):
        if loose:
            t = "".join(c.lower() for c in t if c.isalnum())
        return t == t[::-1]

    w = rand_word(rng, 2, 5)
    cases = [("",), ("a",), ("abca",), (w + w[::-1],), (w + "x" + w[::-1],), ("ab",), ("Abba",),
             ("Never odd, or even!",), (rand_word(rng, 3, 6),)]
    if loose:
        clean = f'c = [ch.lower() for ch in {s} if ch.isalnum()]'
        correct = [
            """
            def $f($s):
                t = "".join(ch.lower() for ch in $s if ch.isalnum())
                return t == t[::-1]
            """,
            f"""
            def $f($s):
                {clean}
                i, j = 0, len(c) - 1
                while i < j:
                    if c[i] != c[j]:
                        return False
                    i, j = i + 1, j - 1
                return True
            """,
            f"""
            def $f($s):
                {clean}
                return all(c[i] == c[-1 - i] for i in range(len(c) // 2))
            """,
        ]
        buggy = [
            """
            def $f($s):
                t = "".join(ch for ch in $s if ch.isalnum())
                return t == t[::-1]
            """,
            """
            def $f($s):
                t = $s.lower()
                return t == t[::-1]
            """,
            f"""
            def $f($s):
                {clean}
                return all(c[i] == c[-i] for i in range(len(c) // 2))
            """,
        ]
    else:
        correct = [
            """
            def $f($s):
                return $s == $s[::-1]
            """,
            """
            def $f($s):
                for i in range(len($s) // 2):
                    if $s[i] != $s[len($s) - 1 - i]:
                        return False
                return True
            """,
            """
            def $f($s):
                return list($s) == list(reversed($s))
            """,
        ]
        buggy = [
            """
            def $f($s):
                return $s.lower() == $s[::-1].lower()
            """,
            """
            def $f($s):
                for i in range(len($s) // 2):
                    if $s[i] != $s[len($s) - i]:
                        return False
                return True
            """,
            """
            def $f($s):
                return $s[0] == $s[-1]
            """,
        ]
    return problem("palindrome", instr, fn, ref, cases, correct, buggy, v, 1 + loose)


def run_length(rng: random.Random) -> Problem:
    count_first = rng.random() < 0.5
    fn = rng.choice(["rle", "run_length_encode", "compress", "encode_runs"])
    s = rng.choice(STR_ARGS)
    fmt = "count then character" if count_first else "character then count"
    ex = "3a1b2c" if count_first else "a3b1c2"
    v = dict(f=fn, s=s, fmt=fmt, ex=ex)
    instr = instruction(rng, fn, [s], [
        "returns the run-length encoding of `{s}`: each maximal run of one repeated character is written as {fmt}, so \"aaabcc\" becomes \"{ex}\".",
        "compresses `{s}` by replacing every run of equal consecutive characters with {fmt} (for example \"aaabcc\" -> \"{ex}\").",
    ], v, ["The empty string encodes to the empty string."])

    def ref(t):
        out, i = [], 0
        while i < len(t):
            j = i
            while j < len(t) and t[j] == t[i]:
                j += 1
            out.append(f"{j - i}{t[i]}" if count_first else f"{t[i]}{j - i}")
            i = j
        return "".join(out)

    def runs():
        return "".join(rng.choice("abc") * rng.randint(1, 4) for _ in range(rng.randint(2, 5)))

    cases = [("",), ("a",), ("aaabcc",), ("abab",), ("zzzz",), (runs(),), (runs(),)]
    v["piece"] = "str(n) + ch" if count_first else "ch + str(n)"
    v["gpiece"] = "str(len(list(g))) + ch" if count_first else "ch + str(len(list(g)))"
    correct = [
        """
        def $f($s):
            out = ""
            i = 0
            while i < len($s):
                ch, n = $s[i], 0
                while i < len($s) and $s[i] == ch:
                    i += 1
                    n += 1
                out += $piece
            return out
        """,
        """
        from itertools import groupby

        def $f($s):
            return "".join($gpiece for ch, g in groupby($s))
        """,
    ]
    buggy = [
        """
        def $f($s):
            out = ""
            ch, n = $s[0], 0
            for c in $s:
                if c == ch:
                    n += 1
                else:
                    out += $piece
                    ch, n = c, 1
            return out
        """,
        """
        def $f($s):
            if not $s:
                return ""
            out = ""
            ch, n = $s[0], 0
            for c in $s:
                if c == ch:
                    n += 1
                else:
                    out += $piece
                    ch, n = c, 1
            return out
        """,
        """
        def $f($s):
            return "".join(ch + str($s.count(ch)) for ch in dict.fromkeys($s))
        """ if not count_first else """
        def $f($s):
            return "".join(str($s.count(ch)) + ch for ch in dict.fromkeys($s))
        """,
    ]
    return problem("run_length", instr, fn, ref, cases, correct, buggy, v, 3)


def count_vowels(rng: random.Random) -> Problem:
    with_y = rng.random() < 0.3
    vowels = "aeiouy" if with_y else "aeiou"
    fn = rng.choice(["count_vowels", "vowel_count", "num_vowels", "vowels_in"])
    s = rng.choice(STR_ARGS)
    listing = ", ".join(vowels)
    v = dict(f=fn, s=s, vowels=vowels, listing=listing, short=vowels[:-1])
    instr = instruction(rng, fn, [s], [
        "returns the number of vowels ({listing}) in `{s}`, counting upper- and lower-case letters.",
        "counts how many characters of `{s}` are vowels, where the vowels are {listing} in either case.",
    ], v, ["Other characters are ignored.", "Return 0 for the empty string."])

    def ref(t):
        return sum(1 for c in t.lower() if c in vowels)

    cases = [("",), ("xyz",), ("AEIOU",), ("Hello World",), ("rhythm and blues",),
             (rand_sentence(rng).capitalize(),), (rand_word(rng, 4, 9).upper(),)]
    correct = [
        """
        def $f($s):
            return sum(1 for c in $s.lower() if c in "$vowels")
        """,
        """
        def $f($s):
            count = 0
            for c in $s:
                if c.lower() in "$vowels":
                    count += 1
            return count
        """,
        """
        def $f($s):
            return len([c for c in $s if c in "$vowels" + "$vowels".upper()])
        """,
    ]
    buggy = [
        """
        def $f($s):
            return sum(1 for c in $s if c in "$vowels")
        """,
        """
        def $f($s):
            return sum(1 for c in $s.lower() if c in "$short")
        """,
        """
        def $f($s):
            return sum(1 for c in $s.lower() if c.isalpha() and c not in "$vowels")
        """,
    ]
    if not with_y:
        buggy[1] = """
        def $f($s):
            return sum(1 for c in $s.lower() if c in "aeiouy")
        """
    return problem("count_vowels", instr, fn, ref, cases, correct, buggy, v, 1)


def caesar(rng: random.Random) -> Problem:
    shift = rng.randint(1, 25)
    fn = rng.choice(["caesar", "shift_letters", "encrypt", "rotate_letters", f"rot{shift}"])
    s = rng.choice(STR_ARGS)
    v = dict(f=fn, s=s, k=shift)
    instr = instruction(rng, fn, [s], [
        "shifts every lowercase letter a-z in `{s}` forward by {k} places in the alphabet, wrapping from z back to a, and returns the result; other characters are left unchanged.",
        "applies a Caesar cipher with shift {k} to the lowercase letters of `{s}` (wrapping around after 'z') and returns the new string. Characters that are not lowercase letters stay as they are.",
    ], v)

    def ref(t):
        return "".join(chr((ord(c) - 97 + shift) % 26 + 97) if "a" <= c <= "z" else c for c in t)

    cases = [("",), ("abc",), ("xyz",), ("hello, world!",), ("Mixed Case 42",), (rand_sentence(rng),)]
    correct = [
        """
        def $f($s):
            out = []
            for c in $s:
                if "a" <= c <= "z":
                    c = chr((ord(c) - ord("a") + $k) % 26 + ord("a"))
                out.append(c)
            return "".join(out)
        """,
        """
        from string import ascii_lowercase as letters

        def $f($s):
            table = str.maketrans(letters, letters[$k:] + letters[:$k])
            return $s.translate(table)
        """,
    ]
    buggy = [
        """
        def $f($s):
            return "".join(chr(ord(c) + $k) if c.islower() else c for c in $s)
        """,
        """
        def $f($s):
            return "".join(chr((ord(c) - ord("a") + $k) % 26 + ord("a")) for c in $s)
        """,
        """
        def $f($s):
            return "".join(chr((ord(c) - ord("a") + $k) % 25 + ord("a")) if "a" <= c <= "z" else c for c in $s)
        """,
    ]
    return problem("caesar", instr, fn, ref, cases, correct, buggy, v, 2)


def capitalize_words(rng: random.Random) -> Problem:
    fn = rng.choice(["capitalize_words", "title_words", "cap_each_word", "upper_first_letters", "capitalize_all", "initial_caps", "cap_words"])
    s = rng.choice(STR_ARGS)
    v = dict(f=fn, s=s)
    instr = instruction(rng, fn, [s], [
        "returns `{s}` with the first character of every space-separated word made uppercase and the rest of the word lowercase.",
        "capitalizes each word of `{s}` (words are separated by single spaces): first letter upper-case, remaining letters lower-case.",
    ], v, ["Spaces are kept exactly as they are.", "Only the first character of a word changes to upper case, so \"don't\" becomes \"Don't\"."])

    def ref(t):
        return " ".join(w[:1].upper() + w[1:].lower() for w in t.split(" "))

    cases = [("",), ("hello",), ("hELLO wORLD",), ("don't stop",), ("a  b",), (rand_sentence(rng),)]
    correct = [
        """
        def $f($s):
            return " ".join(w[:1].upper() + w[1:].lower() for w in $s.split(" "))
        """,
        """
        def $f($s):
            return " ".join(w.capitalize() for w in $s.split(" "))
        """,
    ]
    buggy = [
        """
        def $f($s):
            return $s.title()
        """,
        """
        def $f($s):
            return " ".join(w.capitalize() for w in $s.split())
        """,
        """
        def $f($s):
            return " ".join(w[0].upper() + w[1:] for w in $s.split(" "))
        """,
    ]
    return problem("capitalize_words", instr, fn, ref, cases, correct, buggy, v, 2)


FAMILIES = (reverse_words, palindrome, run_length, count_vowels, caesar, capitalize_words)
