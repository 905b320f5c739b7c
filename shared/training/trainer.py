"""Step 8 of the classification recipes whose examples are one row each (assertion status, relations): the
imbalance options, the batch size and epochs the training data calls for where the user set none, and the Trainer."""

from __future__ import annotations

import logging

from transformers import DataCollatorWithPadding, Trainer

from shared.core.resume import EpochSeededSampling
from shared.training.adaptive import Derived, adapt_to_training_data
from shared.training.imbalance import oversampled_order, training_loss
from shared.training.optim import optimizer_cls_and_kwargs

logger = logging.getLogger(__name__)


def classifier_trainer(model, tokenizer, tokenized: dict, label_ids: dict, num_labels: int, model_args,
                       training_args, default_epochs: float) -> tuple[Trainer, DataCollatorWithPadding, Derived, int]:
    """(trainer, collator, derived defaults, training examples). With ``--oversample`` the training split in
    ``tokenized`` is replaced by its oversampled order; class weighting / focal loss go in through
    ``compute_loss_func``; a resumed run trains in the same order (``EpochSeededSampling``)."""
    loss_func, derived, train_examples = None, Derived(), len(tokenized.get("train", ()))
    if training_args.do_train:
        if model_args.oversample:
            order = oversampled_order(label_ids["train"], seed=training_args.seed)
            tokenized["train"] = tokenized["train"].select(order)
            train_examples = len(order)
            logger.info("oversampled training set: %d examples", train_examples)
        derived = adapt_to_training_data(training_args, model_args, len(tokenized["train"]), default_epochs,
                                         label_ids["train"], num_labels)
        loss_func = training_loss(label_ids["train"], num_labels, model_args.class_weighting, model_args.focal_gamma,
                                  False, label_smoothing=training_args.label_smoothing_factor)
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=collator,
        compute_loss_func=loss_func,
        optimizer_cls_and_kwargs=optimizer_cls_and_kwargs(model, training_args, model_args.layerwise_lr_decay),
        callbacks=[EpochSeededSampling()],
    )
    return trainer, collator, derived, train_examples
