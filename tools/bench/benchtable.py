"""The result table the bench scripts print (engine.sh, watchers.sh): one row per figure,
columns padded, `target` "-" when empty, `met?` yes / NO / "-" (no target)."""


def print_table(header: tuple[str, str, str, str], rows: list[tuple[str, str, str, "bool | None"]]) -> None:
    cells = [(p, f, t or "-", "-" if m is None else ("yes" if m else "NO")) for p, f, t, m in rows]
    widths = [max(len(c[i]) for c in cells + [header]) for i in range(4)]
    print()
    for i, c in enumerate([header] + cells):
        print("| " + " | ".join(c[j].ljust(widths[j]) for j in range(4)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (widths[j] + 2) for j in range(4)) + "|")
    print()
