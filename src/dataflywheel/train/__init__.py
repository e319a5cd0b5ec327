"""Fine-tuning (LoRA SFT and DPO with TRL + PEFT) on a run's output or any dataset."""
