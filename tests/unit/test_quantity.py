"""Kubernetes resource quantities, read by the operator's own parser (`validation.parse_quantity`)
as the apiserver reads them: the table is the grammar of k8s.io/apimachinery's resource.Quantity."""

from __future__ import annotations

from decimal import Decimal

import pytest

from traindeploy.validation import parse_quantity


@pytest.mark.parametrize(("quantity", "value"), [
    ("1", "1"),
    ("0", "0"),
    ("-1", "-1"),
    ("+2", "2"),
    ("1.5", "1.5"),
    (".5", "0.5"),
    ("5.", "5"),
    ("500m", "0.5"),
    ("250u", "0.00025"),
    ("100n", "0.0000001"),
    ("2k", "2000"),
    ("3M", "3000000"),
    ("1G", "1000000000"),
    ("1T", "1e12"),
    ("1P", "1e15"),
    ("1E", "1e18"),  # E alone is the exa suffix
    ("1Ki", "1024"),
    ("1.5Gi", "1610612736"),
    ("0.1Mi", "104857.6"),
    ("2Ti", str(2 * 1024 ** 4)),
    ("1Pi", str(1024 ** 5)),
    ("1Ei", str(1024 ** 6)),
    ("2e3", "2000"),
    ("1E3", "1000"),  # E followed by a number is an exponent
    ("1e-3", "0.001"),
    ("1.5e+2", "150"),
])
def test_a_quantity_reads_as_its_value(quantity, value):
    assert parse_quantity(quantity) == Decimal(value)


@pytest.mark.parametrize("quantity", [
    "", " ", "abc", "Gi", "e3", ".", "-", "1.2.3",
    "1K",     # the decimal kilo is lower-case
    "1ki",    # binary suffixes are capitalised
    "1e",     # an exponent needs digits
    "1e1.5",  # and they are whole
    "1 Gi", "1Gi ", " 1", "1Gi1", "0x10", "1_000",
])
def test_anything_else_is_refused(quantity):
    with pytest.raises(ValueError):
        parse_quantity(quantity)


def test_requests_and_limits_compare_by_value_across_suffixes():
    assert parse_quantity("1Gi") > parse_quantity("1G")
    assert parse_quantity("1500m") == parse_quantity("1.5")
    assert parse_quantity("1024Mi") == parse_quantity("1Gi")
