"""TrainConfig (ortho_lib.training): every field is validated with a message naming it, replace() checks the
copy, ``trained`` is normalised, and the cross-field rules hold.  Everything here is deterministic."""
import dataclasses
import math

import pytest

import ortho_lib as ol

BASE = dict(lr=0.1, max_steps=10)

# (field, bad value, exception, message start): one bad value per rule of each field
BAD_FIELDS = [
    ("lr", 0.0, ValueError, "TrainConfig.lr must be > 0"),
    ("lr", -0.5, ValueError, "TrainConfig.lr must be > 0"),
    ("lr", math.inf, ValueError, "TrainConfig.lr must be finite"),
    ("lr", "0.1", TypeError, "TrainConfig.lr must be a real number"),
    ("max_steps", -1, ValueError, "TrainConfig.max_steps must be >= 0"),
    ("max_steps", 2.5, TypeError, "TrainConfig.max_steps must be an integer"),
    ("target_margin", math.nan, ValueError, "TrainConfig.target_margin must be finite"),
    ("optimizer", "rmsprop", ValueError, "TrainConfig.optimizer must be one of"),
    ("momentum", 1.0, ValueError, "TrainConfig.momentum must be < 1.0"),
    ("momentum", -0.1, ValueError, "TrainConfig.momentum must be >= 0"),
    ("betas", (0.9,), TypeError, "TrainConfig.betas must be a pair of numbers"),
    ("betas", (0.9, 1.0), ValueError, r"TrainConfig.betas\[1\] must be < 1.0"),
    ("eps", 0.0, ValueError, "TrainConfig.eps must be > 0"),
    ("batch_size", 0, ValueError, "TrainConfig.batch_size must be >= 1"),
    ("weight_decay", -1.0, ValueError, "TrainConfig.weight_decay must be >= 0"),
    ("norm_penalty", -0.1, ValueError, "TrainConfig.norm_penalty must be >= 0"),
    ("trained", "bu", ValueError, "TrainConfig.trained must include 'W'"),
    ("trained", "Wx", ValueError, "TrainConfig.trained must be a string of distinct letters"),
    ("trained", "WW", ValueError, "TrainConfig.trained must be a string of distinct letters"),
    ("trained", "", ValueError, "TrainConfig.trained must be a string of distinct letters"),
    ("schedule", "cosine", ValueError, "TrainConfig.schedule must be one of"),
    ("schedule", 0.5, TypeError, "TrainConfig.schedule must be one of"),
    ("record_every", 0, ValueError, "TrainConfig.record_every must be >= 1"),
    ("record_params", 1, TypeError, "TrainConfig.record_params must be True or False"),
    ("seed", -1, ValueError, "TrainConfig.seed must be >= 0"),
    ("strict", "yes", TypeError, "TrainConfig.strict must be True or False"),
]


def test_the_bad_value_table_covers_every_field():
    """Bookkeeping of the table below: every TrainConfig field has at least one bad value in it."""
    assert {f.name for f in dataclasses.fields(ol.TrainConfig)} == {row[0] for row in BAD_FIELDS}


@pytest.mark.parametrize("field,value,exc,message", BAD_FIELDS, ids=[f"{r[0]}={r[1]!r}" for r in BAD_FIELDS])
def test_each_bad_field_is_rejected_naming_the_field(field, value, exc, message):
    """Contract: a bad value of any field raises, the message starting with TrainConfig.<field>."""
    kw = dict(BASE, **{field: value})
    if field == "record_params":
        kw["record_every"] = 1
    with pytest.raises(exc, match="^" + message):
        ol.TrainConfig(**kw)


def test_valid_values_are_kept_and_converted():
    """Contract: accepted numbers are stored as float/int (an integral float budget becomes an int)."""
    cfg = ol.TrainConfig(lr=1, max_steps=5.0, target_margin=2, betas=[0.8, 0.99], batch_size=3.0)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.max_steps == 5 and isinstance(cfg.max_steps, int)
    assert cfg.target_margin == 2.0 and cfg.betas == (0.8, 0.99) and cfg.batch_size == 3
    assert ol.TrainConfig(**BASE, schedule=lambda t, loss: 1.0).schedule(0, 1.0) == 1.0


def test_config_is_frozen():
    """Contract: a TrainConfig is immutable (variants come from replace)."""
    cfg = ol.TrainConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0


def test_replace_changes_only_the_named_fields_and_leaves_the_original():
    """Contract of replace: a new config with the changes, every other field and the original unchanged."""
    cfg = ol.TrainConfig(lr=0.1, max_steps=10, optimizer="momentum", momentum=0.5, trained="Wbu")
    new = cfg.replace(weight_decay=1e-3, max_steps=20)
    assert (new.weight_decay, new.max_steps) == (1e-3, 20)
    assert (cfg.weight_decay, cfg.max_steps) == (0.0, 10)
    for f in dataclasses.fields(ol.TrainConfig):
        if f.name not in ("weight_decay", "max_steps"):
            assert getattr(new, f.name) == getattr(cfg, f.name), f.name


def test_replace_validates_the_copy():
    """Contract of replace: the copy is checked like a new config."""
    cfg = ol.TrainConfig(**BASE)
    with pytest.raises(ValueError, match="^TrainConfig.lr must be > 0"):
        cfg.replace(lr=-1.0)
    with pytest.raises(ValueError, match="^TrainConfig.record_params needs record_every"):
        cfg.replace(record_params=True)


@pytest.mark.parametrize("given,stored", [("W", "W"), ("bW", "Wb"), ("uW", "Wu"), ("cubW", "Wbuc"), ("Wbuc", "Wbuc")])
def test_trained_is_normalised_to_the_order_W_b_u_c(given, stored):
    """Contract of TrainConfig.trained: any order of distinct letters is stored in the order 'Wbuc'."""
    assert ol.TrainConfig(**BASE, trained=given).trained == stored


def test_record_params_needs_record_every():
    """Rule: record_params keeps parameters at the recorded steps, so it needs record_every."""
    with pytest.raises(ValueError, match="^TrainConfig.record_params needs record_every"):
        ol.TrainConfig(**BASE, record_params=True)
    assert ol.TrainConfig(**BASE, record_params=True, record_every=5).record_params


def test_strict_needs_a_target_margin():
    """Rule: strict raises when the target is not reached, so it needs a target_margin."""
    with pytest.raises(ValueError, match="^TrainConfig.strict needs a target_margin"):
        ol.TrainConfig(**BASE, strict=True)
    assert ol.TrainConfig(**BASE, strict=True, target_margin=1.0).strict


@pytest.mark.parametrize("changes", [dict(optimizer="sgd"), dict(batch_size=4), dict(optimizer="momentum", batch_size=4)])
def test_max_margin_schedule_rejects_mini_batches(changes):
    """Rule: the max_margin schedule normalises by the full-batch loss, so it rejects SGD and batch_size."""
    with pytest.raises(ValueError, match="^TrainConfig.schedule='max_margin' normalises by the full-batch loss"):
        ol.TrainConfig(**BASE, schedule="max_margin", **changes)


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_max_margin_schedule_accepts_full_batch_optimizers(optimizer):
    """Rule (other side): full-batch optimizers take the max_margin schedule."""
    cfg = ol.TrainConfig(**BASE, schedule="max_margin", optimizer=optimizer)
    assert cfg.full_batch and cfg.schedule == "max_margin"


def test_full_batch_is_false_exactly_for_sgd_or_a_batch_size():
    """Contract of TrainConfig.full_batch."""
    assert ol.TrainConfig(**BASE).full_batch and ol.TrainConfig(**BASE, optimizer="adam").full_batch
    assert not ol.TrainConfig(**BASE, optimizer="sgd").full_batch
    assert not ol.TrainConfig(**BASE, optimizer="momentum", batch_size=2).full_batch
