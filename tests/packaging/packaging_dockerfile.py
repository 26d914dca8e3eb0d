"""Just enough of the Dockerfile and .dockerignore languages to check our image's recipe
without a Docker engine: instructions, stages, ARG substitution in FROM, and the build-context
filter."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the (joined) line
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/RUN, or None for the shell form."""
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--from=build --chown=1:1 a b` -> ({from: build, chown: 1:1}, [a, b])."""
        flags, words = {}, []
        for word in shlex.split(self.args):
            if word.startswith("--") and not words:
                key, _, value = word[2:].partition("=")
                flags[key] = value
            else:
                words.append(word)
        return flags, words


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def text(self) -> str:
        return "\n".join(f"{i.keyword} {i.args}" for i in self.instructions)


def instructions(text: str) -> list[Instruction]:
    """Joins `\\` continuations and drops comments (also those inside a continuation), as
    BuildKit does. Parser directives (`# syntax=...`) are comments here."""
    result: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip(), start))
    if pending:
        raise ValueError("the Dockerfile ends inside a line continuation")
    return result


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs (before the first FROM) with their defaults, and the stages, each FROM
    image with those ARGs substituted."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m[1] or m[2], ""), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(image=image, name=name))
        elif not result:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may come before the first FROM")
            key, _, default = instruction.args.partition("=")
            global_args[key.strip()] = default.strip().strip('"')
        else:
            result[-1].instructions.append(instruction)
    return global_args, result


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern, str]]:
    """(negated, regex, pattern) per pattern, in order; the last pattern that matches decides."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        pattern = pattern.strip("/")  # Docker cleans the pattern: leading and trailing / do not matter
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):  # any directories, or none
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((negated, re.compile(regex + r"\Z"), pattern))
    return patterns



Patterns = list[tuple[bool, re.Pattern, str]]


def excluded(path: str, patterns: Patterns) -> bool:
    """Whether `path` (relative, with /) stays out of the build context. A pattern that matches a
    directory matches everything under it."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, regex, _ in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def context_files(root: Path, patterns: Patterns) -> list[str]:
    """The files (relative paths) a `docker build` would send from `root`. Skips walking an
    excluded directory that no `!` pattern could reach into (.git, .venv: thousands of files)."""
    reentries = [re.split(r"[*?\[]", pattern, maxsplit=1)[0] for negated, _, pattern in patterns if negated]
    found = []
    for directory, subdirs, files in os.walk(root):
        relative = Path(directory).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        subdirs[:] = [d for d in subdirs if not excluded(prefix + d, patterns)
                      or any(r.startswith(prefix + d + "/") or r in ("", prefix + d) for r in reentries)]
        found += [prefix + name for name in files if not excluded(prefix + name, patterns)]
    return sorted(found)
