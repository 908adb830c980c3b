"""What ``--help`` shows beyond click's defaults: a command's options under titled sections (the
model, the population and update, one optimiser's settings, the run and its output) and the
environment variables intlm reads."""

import click

ENVIRONMENT = [
    ("NUMBA_NUM_THREADS", "Threads of the numba backend (default: every core)."),
    ("INTLM_CACHE", "Folder of the default corpus and of text corpora prepared on the fly "
                    "(default: ~/.cache/intlm; `intlm cache` lists and clears it)."),
]


class _Environment:
    """A command whose help ends with the environment variables intlm reads."""

    def format_epilog(self, ctx, formatter):
        with formatter.section("Environment"):
            formatter.write_dl(ENVIRONMENT)
        super().format_epilog(ctx, formatter)


class Commands(_Environment, click.Group):
    """The ``intlm`` group: its help lists the environment too."""


class Sections(_Environment, click.Command):
    """A command whose help lists its options under titled sections: ``sections`` is a list of
    (title, [parameter names]); an option no section names is listed last under "Other options"."""

    def __init__(self, *args, sections=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = list(sections)

    def format_options(self, ctx, formatter):
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        named = {name for _, names in self.sections for name in names}
        others = [name for name in records if name not in named]
        for title, names in self.sections + [("Other options", others)]:
            rows = [records[name] for name in names if records.get(name)]  # arguments have no record
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
