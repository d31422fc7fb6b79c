"""The webhook's hot INSERTs (the delivery log's row, a new message's row) as SQL the
ORM compiles once per process, instead of once per webhook.

Why: ``Model.save()`` compiles its INSERT anew every time (the compiler, the
placeholders, the RETURNING clause), and on the webhook's path that was about a
fifth of what a later message costs in Python. The statement is the ORM's own,
compiled from the model's ``_meta`` the first time a model is inserted on a
database; only the values change per row, and they still come from the model's
fields as ``save()`` takes them (``pre_save``, so ``auto_now_add`` and the like;
``get_db_prep_save``, so a site's custom field prepares its value; the defaults
were applied when the instance was made).

It is used only where nothing could tell it from ``save(force_insert=True)``; else
``insert`` calls exactly that:

* the model's class does not override ``save()`` (the abstract models' own
  ``ChangedFieldsModel.save`` is mirrored here: the instance keeps its snapshot), nor
  ``save_base``, ``_save_table``, ``_do_insert`` or its base manager's ``_insert``;
* no ``pre_save`` or ``post_save`` receiver is connected for it (checked per call:
  a site may connect one at any time);
* a single table (no multi-table inheritance, no proxy), an auto primary key not
  set yet and without a default, no ``order_with_respect_to``, no field with a
  database default, a generated column or a placeholder of its own (GIS), no value
  an expression;
* one of Django's own backends for PostgreSQL, SQLite and MySQL/MariaDB, not a
  subclass (Oracle's RETURNING has out parameters; PostGIS or a wrapper may read it
  or compile the INSERT its own way).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from django.db import connections, models, transaction
from django.db.models import signals
from django.db.models.fields import NOT_PROVIDED, Field
from django.db.models.query import QuerySet
from django.db.models.sql import InsertQuery

from .models import ChangedFieldsModel

PLAIN_SAVES = (models.Model.save, ChangedFieldsModel.save)
# Django's own backends, by module: a subclass (PostGIS, a tenant router, a metrics
# wrapper) may read RETURNING or compile an INSERT its own way.
BUILT_IN_BACKENDS = frozenset({"django.db.backends.postgresql.base", "django.db.backends.sqlite3.base",
                               "django.db.backends.mysql.base"})


@dataclass(frozen=True)
class _Plan:
    sql: str
    fields: tuple[Field, ...]
    returning: tuple[Field, ...]


def insert(obj: models.Model, using: str) -> None:
    """Store the new ``obj`` on database ``using``, as ``obj.save(force_insert=True,
    using=using)`` does (and through it, when the fast statement would differ)."""
    cls = type(obj)
    plan = _plan(cls, using) if _plain(cls) and obj.pk is None else None
    if plan is None:
        obj.save(force_insert=True, using=using)
        return
    # save()'s own check: an unsaved related instance must not become a NULL key.
    obj._prepare_related_fields_for_save(operation_name="save")  # type: ignore[attr-defined]
    values = [field.pre_save(obj, True) for field in plan.fields]
    if any(hasattr(value, "resolve_expression") for value in values):
        obj.save(force_insert=True, using=using)
        return
    db = connections[using]
    params = [field.get_db_prep_save(value, db) for field, value in zip(plan.fields, values, strict=True)]
    if any(hasattr(param, "as_sql") for param in params):  # a value the ORM would compile
        obj.save(force_insert=True, using=using)
        return
    # As save() does: an error inside an atomic block marks it for rollback, so a
    # caller that catches it cannot go on writing in a broken transaction.
    with transaction.mark_for_rollback_on_error(using), db.cursor() as cursor:
        cursor.execute(plan.sql, params)
        if not plan.returning:
            row: tuple[Any, ...] = ()
        elif db.features.can_return_columns_from_insert:  # INSERT ... RETURNING, as Django reads it
            row = tuple(cursor.fetchone())
        else:  # MySQL: the auto primary key alone
            row = (db.ops.last_insert_id(cursor, cls._meta.db_table, plan.returning[0].column or ""),)
    for field, value in zip(plan.returning, row, strict=True):
        col = field.get_col(cls._meta.db_table)
        for convert in [*db.ops.get_db_converters(col), *col.get_db_converters(db)]:
            value = convert(value, col, db)
        setattr(obj, field.attname, value)
    obj._state.adding = False
    obj._state.db = using
    if isinstance(obj, ChangedFieldsModel):  # as its save() leaves it
        obj.__dict__["_convlink_stored"] = obj._stored_values()


def _plain(cls: type[models.Model]) -> bool:
    """Nothing of the site's between save() and the INSERT: no override of save() or of
    the steps it takes (django-model-utils' FieldTracker patches save_base), of the
    base manager's _insert, and no pre_save or post_save receiver."""
    return (cls.save in PLAIN_SAVES and cls.save_base is models.Model.save_base
            and cls._save_table is models.Model._save_table  # type: ignore[attr-defined]
            and cls._do_insert is models.Model._do_insert  # type: ignore[attr-defined]
            and _plain_manager(cls._base_manager)
            and not signals.pre_save.has_listeners(cls) and not signals.post_save.has_listeners(cls))


def _plain_manager(manager: models.Manager) -> bool:
    # Django's own Manager (a base_manager_name may name another): its queryset class
    # read from the class, not get_queryset(), which would make a QuerySet per row.
    kind = type(manager)
    return (kind._insert is models.Manager._insert  # type: ignore[attr-defined]
            and kind.get_queryset is models.Manager.get_queryset
            and getattr(manager, "_queryset_class", None) is QuerySet)


@lru_cache(maxsize=32)
def _plan(cls: type[models.Model], using: str) -> _Plan | None:
    """The model's INSERT on ``using``, compiled by the ORM, or None where a plain
    statement would not be what ``save()`` does."""
    opts = cls._meta
    pk = opts.pk
    if (opts.proxy or opts.parents or opts.order_with_respect_to or pk is None or pk is not opts.auto_field
            or pk.has_default()):
        return None
    fields = tuple(f for f in opts.local_concrete_fields if f is not pk)
    # A placeholder of a field's own may depend on its value (GIS, MySQL's binary);
    # Django 6.1 calls the hook get_placeholder_sql.
    if any(f.generated or f.db_default is not NOT_PROVIDED or hasattr(f, "get_placeholder")
           or hasattr(f, "get_placeholder_sql") for f in fields):
        return None
    db = connections[using]
    if type(db).__module__ not in BUILT_IN_BACKENDS:
        return None
    # Compiled from a row of NULLs, raw: no instance is made and no field's pre_save
    # runs (a site's default or pre_save may count or query).
    query = InsertQuery(cls)
    query.insert_values(list(fields), [SimpleNamespace(**{f.attname: None for f in fields})],  # type: ignore[list-item]
                        raw=True)
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = list(opts.db_returning_fields)
    try:
        statements = compiler.as_sql()
    except Exception:  # a field that cannot prepare NULL: save() will do
        return None
    if len(statements) != 1 or compiler.returning_params:
        return None
    sql, params = statements[0]
    if len(params) != len(fields):
        return None
    returning = tuple(opts.db_returning_fields)
    if returning and not db.features.can_return_columns_from_insert and returning != (pk,):
        return None
    return _Plan(sql, fields, returning)
