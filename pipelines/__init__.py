"""Pipeline definitions: which stages run in which order. They take an executor; they never
create one."""
