"""The file-descriptor judgement: warn at 90 % of the limit, clear below 80 % (hysteresis),
never with an unknown limit; and its place among the readiness reasons."""

from __future__ import annotations

from service.core.descriptors import DescriptorUse, describe, pressure
from tests.service.core.test_readiness import judge


def test_warns_at_ninety_percent_and_clears_below_eighty():
    assert not pressure(DescriptorUse(143, 160), warned=False)  # 89 %
    assert pressure(DescriptorUse(144, 160), warned=False)  # 90 %
    assert pressure(DescriptorUse(129, 160), warned=True)  # 81 %: still short once warned
    assert not pressure(DescriptorUse(127, 160), warned=True)  # 79 %: clear


def test_an_unknown_limit_never_warns():
    assert not pressure(DescriptorUse(10_000, 0), warned=False)


def test_the_operator_reads_the_counts_and_what_to_do():
    text = describe(DescriptorUse(158, 160))
    assert "158 of 160" in text and "RLIMIT_NOFILE" in text and "ulimit -n" in text


def test_short_of_descriptors_makes_the_service_unready():
    reason = describe(DescriptorUse(150, 160))
    verdict = judge(descriptors=reason)
    assert not verdict.ready and verdict.reasons == [reason]
    assert judge(descriptors=None).ready
