"""Generate a realistic golang-migrate corpus for the lint benchmark (deterministic).

    python bench/gen_corpus.py /tmp/veza-lint-corpus --files 2000

Files look like a real service's history: CREATE TABLE with many columns, indexes,
foreign keys, ALTERs, enum types, views, DO blocks, comments and seed-data INSERTs.
The corpus is written outside the repository; it is not committed.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

TYPES = ["bigint", "integer", "smallint", "text", "varchar(64)", "varchar(255)", "boolean", "timestamptz",
         "numeric(12,2)", "jsonb", "uuid", "date", "double precision", "char(2)", "inet"]
DEFAULTS = {"bigint": "0", "integer": "0", "smallint": "0", "text": "''", "varchar(64)": "''",
            "varchar(255)": "''", "boolean": "false", "timestamptz": "now()", "numeric(12,2)": "0",
            "jsonb": "'{}'::jsonb", "uuid": "gen_random_uuid()", "date": "CURRENT_DATE",
            "double precision": "0", "char(2)": "'XX'", "inet": "'0.0.0.0'"}
WORDS = ["account", "order", "invoice", "payment", "shipment", "product", "review", "coupon", "session",
         "device", "address", "ticket", "message", "report", "team", "project", "task", "label", "upload", "event"]
COLS = ["name", "title", "status", "kind", "amount", "total", "code", "email", "phone", "country", "city",
        "notes", "payload", "score", "rank", "flag", "owner_id", "parent_id", "ref", "external_id", "label",
        "started_at", "ended_at", "expires_at", "version", "priority", "currency", "region", "source", "channel"]


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.tables: list[tuple[str, list[tuple[str, str]]]] = []
        self.n_enum = 0

    def ident(self) -> str:
        return f"{self.r.choice(WORDS)}_{self.r.choice(WORDS)}_{len(self.tables)}"

    def create_table(self) -> str:
        name = self.ident()
        ncols = self.r.randint(12, 40)
        cols: list[tuple[str, str]] = []
        used = set()
        lines = ["  id bigserial PRIMARY KEY"]
        for _ in range(ncols):
            c = self.r.choice(COLS)
            while c in used:
                c = f"{self.r.choice(COLS)}_{self.r.randint(1, 99)}"
            used.add(c)
            t = self.r.choice(TYPES)
            cols.append((c, t))
            extra = ""
            if self.r.random() < 0.4:
                extra += " NOT NULL"
            if self.r.random() < 0.35:
                extra += f" DEFAULT {DEFAULTS[t]}"
            if self.r.random() < 0.05:
                extra += " UNIQUE"
            lines.append(f"  {c} {t}{extra}")
        lines.append("  created_at timestamptz NOT NULL DEFAULT now()")
        lines.append("  updated_at timestamptz NOT NULL DEFAULT now()")
        if self.tables and self.r.random() < 0.6:
            parent = self.r.choice(self.tables)[0]
            lines.append(f"  {parent}_id bigint REFERENCES {parent} (id) ON DELETE CASCADE")
        if self.r.random() < 0.3:
            a = cols[0][0]
            lines.append(f"  CONSTRAINT {name}_{a}_chk CHECK ({a} IS NOT NULL)")
        self.tables.append((name, cols))
        out = [f"-- {name}: created by the {self.r.choice(WORDS)} service",
               f"CREATE TABLE IF NOT EXISTS {name} (\n" + ",\n".join(lines) + "\n);"]
        for c, _t in self.r.sample(cols, k=min(len(cols), self.r.randint(1, 4))):
            out.append(f"CREATE INDEX IF NOT EXISTS {name}_{c}_idx ON {name} ({c});")
        if self.r.random() < 0.3:
            c1, c2 = self.r.sample(cols, k=2)
            out.append(f"CREATE INDEX {name}_{c1[0]}_{c2[0]}_idx ON {name} ({c1[0]}, {c2[0]} DESC);")
        out.append(f"COMMENT ON TABLE {name} IS 'Holds {name.replace('_', ' ')}; do not DROP it.';")
        return "\n".join(out) + "\n"

    def alters(self) -> str:
        name, cols = self.r.choice(self.tables)
        out = []
        for i in range(self.r.randint(2, 8)):
            k = self.r.random()
            if k < 0.45:
                c = f"extra_{len(cols)}_{i}"
                t = self.r.choice(TYPES)
                cols.append((c, t))
                d = f" DEFAULT {DEFAULTS[t]}" if self.r.random() < 0.5 else ""
                out.append(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {c} {t}{d};")
            elif k < 0.7:
                c, _ = self.r.choice(cols)
                out.append(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name}_{c}_{i}_idx ON {name} ({c});")
            elif k < 0.85:
                c, t = self.r.choice(cols)
                out.append(f"ALTER TABLE {name} ALTER COLUMN {c} SET DEFAULT {DEFAULTS[t]};")
            else:
                c, _ = self.r.choice(cols)
                out.append(f"COMMENT ON COLUMN {name}.{c} IS 'see ticket {self.r.randint(100, 9999)}';")
        return "\n".join(out) + "\n"

    def seed(self) -> str:
        name, cols = self.r.choice(self.tables)
        chosen = [c for c in cols if c[1] in ("text", "varchar(64)", "varchar(255)", "integer", "bigint",
                                              "boolean")][:6]
        if not chosen:
            return self.alters()
        rows = []
        for i in range(self.r.randint(20, 150)):
            vals = []
            for c, t in chosen:
                if t in ("integer", "bigint"):
                    vals.append(str(self.r.randint(0, 10**6)))
                elif t == "boolean":
                    vals.append(self.r.choice(["true", "false"]))
                else:
                    vals.append(f"'{c}-{i}-{self.r.choice(WORDS)}''s value; DROP TABLE x'")
            rows.append("  (" + ", ".join(vals) + ")")
        head = f"INSERT INTO {name} ({', '.join(c for c, _ in chosen)}) VALUES\n"
        return "-- seed data\n" + head + ",\n".join(rows) + "\nON CONFLICT DO NOTHING;\n"

    def misc(self) -> str:
        self.n_enum += 1
        name, cols = self.r.choice(self.tables)
        sel = ", ".join(c for c, _ in cols[:5])
        return (f"DO $$\nBEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'state_{self.n_enum}') THEN\n"
                f"    CREATE TYPE state_{self.n_enum} AS ENUM ('new', 'active', 'done');\n  END IF;\nEND\n$$;\n"
                f"CREATE OR REPLACE VIEW {name}_v{self.n_enum} AS SELECT id, {sel} FROM {name};\n"
                f"GRANT SELECT ON {name}_v{self.n_enum} TO reporting;\n")

    def file(self) -> str:
        if len(self.tables) < 5:
            body = self.create_table()
        else:
            k = self.r.random()
            body = (self.create_table() if k < 0.35 else self.alters() if k < 0.6 else self.seed() if k < 0.9
                    else self.misc())
        if self.r.random() < 0.3 and "CONCURRENTLY" not in body:
            body = "BEGIN;\n" + body + "COMMIT;\n"
        return body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.sql"):
        old.unlink()
    g = Gen(args.seed)
    total = 0
    for i in range(1, args.files + 1):
        text = g.file()
        total += len(text)
        (args.out / f"{i:06d}_m{i}.up.sql").write_text(text, encoding="utf-8")
        (args.out / f"{i:06d}_m{i}.down.sql").write_text("-- irreversible\n", encoding="utf-8")
    print(f"wrote {args.files} migrations ({total / 1e6:.1f} MB) to {args.out}")


if __name__ == "__main__":
    main()
