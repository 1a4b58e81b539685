"""avatar.eval: the evaluation metrics, on arrays (no training code, no capture, no files read here).

    image      psnr, ssim, ssim_map, mse (whole frame or inside a mask)
    lpips      LpipsAlex (LPIPS v0.1 AlexNet in plain torch), find_lpips_weights (local files only)
    landmarks  lmd, mouth_opening, opening_stats, inter_ocular, blink_rate, head_angles, jitter,
               detect_sequence (the landmark detector is passed in)
    sync       audio_sync, lagged_corr, speech_envelope, speech_silence_ratio (voiced from avatar.audio.vad)
    syncnet    lse (LSE-C / LSE-D with a user-supplied SyncNet), load_syncnet, mfcc, face_crops
    protocol   analyse_reference + score_frames: every metric of one method against ground truth
    report     write_report: eval.json, eval.md, mouth_opening.png, contact sheets (atomic writes)

Importing this package loads nothing heavy: torch, cv2 and matplotlib are imported inside functions.
"""
