//! I420 pictures drawn by OpenGL: the CPU only rearranges the bytes of each
//! picture (no colour conversion, no scaling) and a fragment shader turns
//! BT.601 limited-range YCbCr into RGB while it draws.
//!
//! The picture goes up as one texture of Y, Cb, Cr and an unused byte per
//! pixel (each chroma sample repeated over its 2x2 block), not as three
//! one-channel planes. Mesa's software renderer, which draws the window on a
//! machine without a GPU, samples textures of four 8-bit channels in fixed
//! point and one-channel ones in floating point: the window costs about a
//! tenth less CPU this way, byte rearranging included (BENCHMARKS.md, "The
//! window's cost"). A GPU does not mind either way. A picture drawn at less
//! than half its width (the self-view) is rearranged from every second or
//! fourth pixel, so it costs what it shows.
//!
//! Every call here needs the window's GL context current, which is the case
//! inside an `egui_glow` paint callback and in `eframe::App::on_exit`.
// glow's calls are FFI into the GL driver and all `unsafe`; each one below is
// made with the context current and with objects this module created on it.
#![allow(unsafe_code)]

use duet_media::VideoFrame;
use eframe::egui_glow::ShaderVersion;
use eframe::glow::{self, HasContext as _};

/// Vertex shader: a unit quad stretched over the viewport (which the paint
/// callback set to the picture's rectangle), mirrored when asked.
const VERTEX: &str = r"
ATTRIBUTE vec2 a_pos;
uniform float u_mirror;
VARYING_OUT vec2 v_uv;
void main() {
    v_uv = vec2(mix(a_pos.x, 1.0 - a_pos.x, u_mirror), 1.0 - a_pos.y);
    gl_Position = vec4(a_pos * 2.0 - 1.0, 0.0, 1.0);
}
";

/// Fragment shader: BT.601 limited range (Y 16–235, Cb/Cr 16–240) to R'G'B',
/// the matrix the codecs and the stamps of `docs/test-signals.md` use.
const FRAGMENT: &str = r"
uniform sampler2D u_ycbcr;
VARYING_IN vec2 v_uv;
void main() {
    vec3 ycbcr = TEXTURE(u_ycbcr, v_uv).rgb;
    float y = 1.1643836 * (ycbcr.r - 0.0627451);
    float u = ycbcr.g - 0.5019608;
    float v = ycbcr.b - 0.5019608;
    vec3 rgb = vec3(y + 1.5960268 * v, y - 0.3917623 * u - 0.8129676 * v, y + 2.0172321 * u);
    FRAG_COLOR = vec4(clamp(rgb, 0.0, 1.0), 1.0);
}
";

/// The GLSL dialect differences between GL 2.1 / ES 2 and GL 3.1+ / ES 3.
fn prelude(version: ShaderVersion, fragment: bool) -> String {
    let mut out = version.version_declaration().to_owned();
    if version.is_embedded() {
        out.push_str("precision mediump float;\n");
    }
    if version.is_new_shader_interface() {
        out.push_str(
            "#define ATTRIBUTE in\n#define VARYING_OUT out\n#define VARYING_IN in\n#define TEXTURE texture\n",
        );
        if fragment {
            out.push_str("out vec4 frag_color;\n#define FRAG_COLOR frag_color\n");
        }
    } else {
        out.push_str(
            "#define ATTRIBUTE attribute\n#define VARYING_OUT varying\n#define VARYING_IN varying\n#define TEXTURE texture2D\n#define FRAG_COLOR gl_FragColor\n",
        );
    }
    out
}

/// The shader program and the quad it draws: one per window.
#[derive(Debug)]
pub struct YuvProgram {
    program: glow::Program,
    quad: glow::Buffer,
    /// Needed on GL 3 core and ES 3; absent on GL 2 / ES 2.
    vertex_array: Option<glow::VertexArray>,
    mirror: Option<glow::UniformLocation>,
    /// Internal format of a texture of four 8-bit channels (ES 2 has no sized formats).
    rgba_internal: i32,
}

const POSITION: u32 = 0;

impl YuvProgram {
    /// Compiles the shaders and makes the quad.
    pub fn new(gl: &glow::Context) -> Result<YuvProgram, String> {
        let version = ShaderVersion::get(gl);
        let modern = gl.version().major >= 3;
        unsafe {
            let program = gl.create_program()?;
            let mut shaders = Vec::new();
            for (kind, source, fragment) in [
                (glow::VERTEX_SHADER, VERTEX, false),
                (glow::FRAGMENT_SHADER, FRAGMENT, true),
            ] {
                let shader = gl.create_shader(kind)?;
                gl.shader_source(shader, &format!("{}{source}", prelude(version, fragment)));
                gl.compile_shader(shader);
                if !gl.get_shader_compile_status(shader) {
                    let log = gl.get_shader_info_log(shader);
                    gl.delete_shader(shader);
                    gl.delete_program(program);
                    return Err(format!("the picture shader does not compile: {log}"));
                }
                gl.attach_shader(program, shader);
                shaders.push(shader);
            }
            gl.bind_attrib_location(program, POSITION, "a_pos");
            gl.link_program(program);
            for shader in shaders {
                gl.detach_shader(program, shader);
                gl.delete_shader(shader);
            }
            if !gl.get_program_link_status(program) {
                let log = gl.get_program_info_log(program);
                gl.delete_program(program);
                return Err(format!("the picture shader does not link: {log}"));
            }
            gl.use_program(Some(program));
            let texture = gl.get_uniform_location(program, "u_ycbcr");
            gl.uniform_1_i32(texture.as_ref(), 0);
            let mirror = gl.get_uniform_location(program, "u_mirror");
            gl.use_program(None);

            let quad = gl.create_buffer()?;
            gl.bind_buffer(glow::ARRAY_BUFFER, Some(quad));
            let corners: [f32; 8] = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
            let bytes: Vec<u8> = corners.iter().flat_map(|c| c.to_ne_bytes()).collect();
            gl.buffer_data_u8_slice(glow::ARRAY_BUFFER, &bytes, glow::STATIC_DRAW);
            let vertex_array = if modern {
                let vertex_array = gl.create_vertex_array()?;
                gl.bind_vertex_array(Some(vertex_array));
                gl.enable_vertex_attrib_array(POSITION);
                gl.vertex_attrib_pointer_f32(POSITION, 2, glow::FLOAT, false, 8, 0);
                gl.bind_vertex_array(None);
                Some(vertex_array)
            } else {
                None
            };
            gl.bind_buffer(glow::ARRAY_BUFFER, None);
            let rgba_internal = if version.is_embedded() && !modern {
                glow::RGBA as i32
            } else {
                glow::RGBA8 as i32
            };
            Ok(YuvProgram {
                program,
                quad,
                vertex_array,
                mirror,
                rgba_internal,
            })
        }
    }

    /// Draws `picture` over the whole viewport, mirrored left to right if asked.
    /// The picture is opaque: blending is off while it is drawn.
    pub fn draw(&self, gl: &glow::Context, picture: &PictureTexture, mirrored: bool) {
        unsafe {
            gl.disable(glow::BLEND);
            gl.use_program(Some(self.program));
            gl.uniform_1_f32(self.mirror.as_ref(), if mirrored { 1.0 } else { 0.0 });
            gl.active_texture(glow::TEXTURE0);
            gl.bind_texture(glow::TEXTURE_2D, Some(picture.texture));
            match self.vertex_array {
                Some(vertex_array) => gl.bind_vertex_array(Some(vertex_array)),
                None => {
                    gl.bind_buffer(glow::ARRAY_BUFFER, Some(self.quad));
                    gl.enable_vertex_attrib_array(POSITION);
                    gl.vertex_attrib_pointer_f32(POSITION, 2, glow::FLOAT, false, 8, 0);
                }
            }
            gl.draw_arrays(glow::TRIANGLE_STRIP, 0, 4);
            match self.vertex_array {
                Some(_) => gl.bind_vertex_array(None),
                None => {
                    gl.disable_vertex_attrib_array(POSITION);
                    gl.bind_buffer(glow::ARRAY_BUFFER, None);
                }
            }
            gl.bind_texture(glow::TEXTURE_2D, None);
            gl.use_program(None);
            gl.enable(glow::BLEND);
        }
    }

    /// Frees the program and the quad.
    pub fn destroy(self, gl: &glow::Context) {
        unsafe {
            gl.delete_program(self.program);
            gl.delete_buffer(self.quad);
            if let Some(vertex_array) = self.vertex_array {
                gl.delete_vertex_array(vertex_array);
            }
        }
    }
}

/// One picture's texture, reused from picture to picture and reallocated
/// only when the size changes, with the buffer its bytes are arranged in.
#[derive(Debug)]
pub struct PictureTexture {
    texture: glow::Texture,
    size: Option<(u32, u32)>,
    ycbcr: Vec<u32>,
}

impl PictureTexture {
    /// An empty texture.
    pub fn new(gl: &glow::Context) -> Result<PictureTexture, String> {
        let texture = unsafe { gl.create_texture()? };
        unsafe {
            gl.bind_texture(glow::TEXTURE_2D, Some(texture));
            for (parameter, value) in [
                (glow::TEXTURE_MIN_FILTER, glow::LINEAR),
                (glow::TEXTURE_MAG_FILTER, glow::LINEAR),
                (glow::TEXTURE_WRAP_S, glow::CLAMP_TO_EDGE),
                (glow::TEXTURE_WRAP_T, glow::CLAMP_TO_EDGE),
            ] {
                gl.tex_parameter_i32(glow::TEXTURE_2D, parameter, value as i32);
            }
            gl.bind_texture(glow::TEXTURE_2D, None);
        }
        Ok(PictureTexture {
            texture,
            size: None,
            ycbcr: Vec::new(),
        })
    }

    /// Puts `frame` into the texture, every `step`-th pixel of it
    /// ([`step_for`]): its bytes rearranged once by [`interleave_ycbcr`], then
    /// copied once by the driver.
    pub fn upload(
        &mut self,
        gl: &glow::Context,
        program: &YuvProgram,
        frame: &VideoFrame,
        step: usize,
    ) {
        let (width, height) = interleave_ycbcr(frame, step, &mut self.ycbcr);
        let (width, height) = (width as u32, height as u32);
        let reallocate = self.size != Some((width, height));
        unsafe {
            gl.bind_texture(glow::TEXTURE_2D, Some(self.texture));
            let pixels = glow::PixelUnpackData::Slice(Some(bytemuck::cast_slice(&self.ycbcr)));
            if reallocate {
                gl.tex_image_2d(
                    glow::TEXTURE_2D,
                    0,
                    program.rgba_internal,
                    width as i32,
                    height as i32,
                    0,
                    glow::RGBA,
                    glow::UNSIGNED_BYTE,
                    pixels,
                );
            } else {
                gl.tex_sub_image_2d(
                    glow::TEXTURE_2D,
                    0,
                    0,
                    0,
                    width as i32,
                    height as i32,
                    glow::RGBA,
                    glow::UNSIGNED_BYTE,
                    pixels,
                );
            }
            gl.bind_texture(glow::TEXTURE_2D, None);
        }
        self.size = Some((width, height));
    }

    /// Whether a picture was uploaded (there is something to draw).
    pub fn filled(&self) -> bool {
        self.size.is_some()
    }

    /// Frees the texture.
    pub fn destroy(self, gl: &glow::Context) {
        unsafe { gl.delete_texture(self.texture) };
    }
}

/// The largest step (1, 2 or 4) at which `frame` can be sampled and still
/// have at least `drawn_width` pixels across: a picture drawn smaller than
/// half its size (the self-view) is arranged and uploaded at a quarter or a
/// sixteenth of the pixels.
pub fn step_for(frame_width: u32, drawn_width: u32) -> usize {
    [4, 2]
        .into_iter()
        .find(|&step| frame_width / step as u32 >= drawn_width.max(1))
        .unwrap_or(1)
}

/// `frame`, taking every `step`-th pixel across and down, as one little-endian
/// word of Y, Cb, Cr, 255 per pixel into `out` (resized to the picture's
/// pixels). At step 1 each chroma sample is repeated over the 2x2 pixels it
/// covers; at 2 and more each pixel has a chroma sample of its own. Values are
/// copied, not converted: the shader does the colour. Returns the size of the
/// picture in `out`.
pub fn interleave_ycbcr(frame: &VideoFrame, step: usize, out: &mut Vec<u32>) -> (usize, usize) {
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    let (out_width, out_height) = (width.div_ceil(step), height.div_ceil(step));
    let chroma_width = width.div_ceil(2);
    let (y, u, v) = frame.planes();
    out.resize(out_width * out_height, 0);
    let pixel = |luma: u8, cb: u8, cr: u8| u32::from_le_bytes([luma, cb, cr, 255]);
    for (row, out_row) in out.chunks_exact_mut(out_width).enumerate() {
        let luma = &y[row * step * width..][..width];
        let chroma = (row * step / 2) * chroma_width;
        let (u, v) = (&u[chroma..][..chroma_width], &v[chroma..][..chroma_width]);
        if step == 1 {
            let (out_pairs, _) = out_row.as_chunks_mut::<2>();
            let (luma_pairs, _) = luma.as_chunks::<2>();
            for ((out, luma), (&cb, &cr)) in
                out_pairs.iter_mut().zip(luma_pairs).zip(u.iter().zip(v))
            {
                *out = [pixel(luma[0], cb, cr), pixel(luma[1], cb, cr)];
            }
            if width % 2 == 1 {
                out_row[width - 1] =
                    pixel(luma[width - 1], u[chroma_width - 1], v[chroma_width - 1]);
            }
        } else {
            let luma = luma.iter().step_by(step);
            let chroma = u.iter().zip(v).step_by(step / 2);
            for (out, (&luma, (&cb, &cr))) in out_row.iter_mut().zip(luma.zip(chroma)) {
                *out = pixel(luma, cb, cr);
            }
        }
    }
    (out_width, out_height)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    /// Each pixel's bytes as the texture gets them.
    fn bytes(pixels: &[u32]) -> Vec<[u8; 4]> {
        pixels.iter().map(|word| word.to_le_bytes()).collect()
    }

    #[test]
    fn each_pixel_gets_its_luma_and_the_chroma_of_its_block() {
        // 3x3: chroma is 2x2, the last column and row share the edge samples.
        let mut frame = VideoFrame::black(3, 3, SystemTime::now()).unwrap();
        let (y, u, v) = frame.planes_mut();
        y.copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        u.copy_from_slice(&[10, 11, 12, 13]);
        v.copy_from_slice(&[20, 21, 22, 23]);
        let mut out = vec![7; 3];
        assert_eq!(interleave_ycbcr(&frame, 1, &mut out), (3, 3));
        assert_eq!(
            bytes(&out),
            [
                [1, 10, 20, 255],
                [2, 10, 20, 255],
                [3, 11, 21, 255],
                [4, 10, 20, 255],
                [5, 10, 20, 255],
                [6, 11, 21, 255],
                [7, 12, 22, 255],
                [8, 12, 22, 255],
                [9, 13, 23, 255],
            ]
        );
    }

    #[test]
    fn a_picture_drawn_small_is_sampled_with_a_step() {
        let mut frame = VideoFrame::black(6, 4, SystemTime::now()).unwrap();
        let (y, u, v) = frame.planes_mut();
        for (i, luma) in y.iter_mut().enumerate() {
            *luma = i as u8;
        }
        u.copy_from_slice(&[10, 11, 12, 13, 14, 15]);
        v.copy_from_slice(&[20, 21, 22, 23, 24, 25]);
        let mut out = Vec::new();
        assert_eq!(interleave_ycbcr(&frame, 2, &mut out), (3, 2));
        assert_eq!(
            bytes(&out),
            [
                [0, 10, 20, 255],
                [2, 11, 21, 255],
                [4, 12, 22, 255],
                [12, 13, 23, 255],
                [14, 14, 24, 255],
                [16, 15, 25, 255],
            ]
        );
    }

    #[test]
    fn the_step_keeps_at_least_the_drawn_width() {
        assert_eq!(step_for(640, 787), 1, "the remote picture, enlarged");
        assert_eq!(step_for(640, 600), 1);
        assert_eq!(step_for(640, 269), 2, "the self-view");
        assert_eq!(step_for(1280, 269), 4);
        assert_eq!(step_for(640, 0), 4, "not drawn yet");
    }

    #[test]
    fn each_dialect_gets_the_words_it_knows() {
        let old = prelude(ShaderVersion::Gl120, true);
        assert!(old.starts_with("#version 120\n"));
        assert!(old.contains("#define FRAG_COLOR gl_FragColor"));
        assert!(!old.contains("precision"));
        let es3 = prelude(ShaderVersion::Es300, true);
        assert!(es3.starts_with("#version 300 es\n"));
        assert!(es3.contains("precision mediump float;"));
        assert!(es3.contains("out vec4 frag_color;"));
        let vertex = prelude(ShaderVersion::Gl140, false);
        assert!(!vertex.contains("frag_color"), "{vertex}");
    }
}
