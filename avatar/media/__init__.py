"""avatar.media: audio and video files through imageio-ffmpeg's ffmpeg binary (no other avatar layer).

    avatar.media.ffmpeg.ffmpeg_exe()                         the binary
    avatar.media.probe.probe(path) -> MediaInfo              codecs, size, rotation, fps, frames (ffmpeg -i)
    avatar.media.audio.load_audio(path, sr=SAMPLE_RATE) -> [S]     any format -> mono float32 (AudioError)
    avatar.media.audio.save_wav(path, wav, sr)               16-bit PCM, atomic
    avatar.media.video.VideoWriter(path, fps, w, h, audio=)  H.264 yuv420p + AAC mp4, atomic
    avatar.media.video.read_frames(path)                     iterator of HxWx3 uint8 RGB (VideoError)
    avatar.media.image.save_image(path, img)                 atomic PNG/JPEG writer

Importing this package starts nothing; heavy work happens in the functions.
"""
