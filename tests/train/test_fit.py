"""A few LoRA steps with TRL move the bundled SmolLM2 the right way (measured by our own forward passes)."""

import pytest
import torch

from dataflywheel.algorithms.less import _batch, _encode, per_sample_losses
from dataflywheel.records import make_record
from dataflywheel.train.fit import TrainConfig, train

pytestmark = pytest.mark.model

SFT = [("Name the largest planet.", "Jupiter is the largest planet in the Solar System."),
       ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
       ("Give a synonym for quick.", "A synonym for quick is fast."),
       ("What is the capital of Japan?", "The capital of Japan is Tokyo.")]


def losses(model_dir, adapter, examples):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    prompts = [(tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                              add_generation_prompt=True), a) for q, a in examples]
    with torch.no_grad():
        return per_sample_losses(model, *_batch(_encode(tokenizer, prompts, 128), tokenizer.pad_token_id))


def test_sft_steps_lower_the_loss_on_their_batch(tmp_path, capfd):
    from dataflywheel.models.bundled import smollm2_dir

    records = [make_record([{"role": "user", "content": q}, {"role": "assistant", "content": a}]) for q, a in SFT]
    result = train(records, tmp_path, TrainConfig(max_steps=6, learning_rate=1e-3, batch_size=4, max_length=128),
                   quiet=True)
    assert result["method"] == "sft" and result["steps"] == 6
    assert "'loss'" not in capfd.readouterr().out  # quiet: no bars, and no log line per step instead of them
    before = losses(smollm2_dir(), None, SFT)
    after = losses(smollm2_dir(), result["adapter"], SFT)
    assert after.mean() < before.mean() - 0.1
    assert (tmp_path / "training_log.json").exists() and (tmp_path / "train_config.json").exists()


def test_dpo_steps_widen_the_chosen_rejected_margin(tmp_path):
    from dataflywheel.models.bundled import smollm2_dir

    pairs = [("Is the Earth round?", "Yes, the Earth is roughly a sphere.", "No, the Earth is flat."),
             ("What is 2 + 2?", "2 + 2 equals 4.", "2 + 2 equals 5."),
             ("Is water wet?", "Yes, water makes things wet.", "No, water is dry."),
             ("Which is bigger, an elephant or a mouse?", "An elephant is bigger.", "A mouse is bigger.")]
    records = [make_record([{"role": "user", "content": q}], chosen={"role": "assistant", "content": c},
                           rejected={"role": "assistant", "content": r}) for q, c, r in pairs]
    result = train(records, tmp_path, TrainConfig(max_steps=6, learning_rate=1e-3, batch_size=4, max_length=128),
                   quiet=True)
    assert result["method"] == "dpo"

    def margin(adapter):
        chosen = losses(smollm2_dir(), adapter, [(q, c) for q, c, _ in pairs])
        rejected = losses(smollm2_dir(), adapter, [(q, r) for q, _, r in pairs])
        return (rejected - chosen).mean().item()  # higher = chosen more likely than rejected

    assert margin(result["adapter"]) > margin(None) + 0.05
