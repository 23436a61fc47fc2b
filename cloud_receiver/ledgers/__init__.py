"""The canteens' own ledgers (自律台账) and the alerts the receiver raises from them (docs/ledgers.md).

- `models`: one pydantic model per kind of ledger (what an entry holds, checked field by field), the
  checks no schema can state (`problems`), and the registry `KINDS`;
- `store`: entries and their revisions in `ledger_records` (append-only after 24 h), photos, comments;
- `rules`: pure functions from ledger rows to findings (a missing morning check, an expired 健康证 …);
- `runner`: the rules over the database, their findings as rows of `alerts` (with their pushes owed),
  periodically and after writes;
- `trace`: one day of a canteen, for tracing a food problem to its sources;
- `xlsx`: a ledger as a spreadsheet with Chinese headers.
"""
