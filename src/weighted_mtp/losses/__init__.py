from weighted_mtp.losses.mtp_loss import MTPLossOutput, mtp_cross_entropy

__all__ = ["MTPLossOutput", "mtp_cross_entropy"]
