//! I420 pictures drawn by OpenGL: the three planes go up as one-channel
//! textures, and a fragment shader turns BT.601 limited-range YCbCr into RGB
//! while it draws. The CPU copies each plane once into its texture and does no
//! colour conversion and no scaling for display.
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
uniform sampler2D u_y;
uniform sampler2D u_u;
uniform sampler2D u_v;
VARYING_IN vec2 v_uv;
void main() {
    float y = 1.1643836 * (TEXTURE(u_y, v_uv).r - 0.0627451);
    float u = TEXTURE(u_u, v_uv).r - 0.5019608;
    float v = TEXTURE(u_v, v_uv).r - 0.5019608;
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
    /// `(internal format, format)` of a one-channel 8-bit texture.
    channel: (i32, u32),
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
            for (unit, name) in ["u_y", "u_u", "u_v"].into_iter().enumerate() {
                let location = gl.get_uniform_location(program, name);
                gl.uniform_1_i32(location.as_ref(), unit as i32);
            }
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
            let channel = if modern {
                (glow::R8 as i32, glow::RED)
            } else {
                (glow::LUMINANCE as i32, glow::LUMINANCE)
            };
            Ok(YuvProgram {
                program,
                quad,
                vertex_array,
                mirror,
                channel,
            })
        }
    }

    /// Draws `planes` over the whole viewport, mirrored left to right if asked.
    /// The picture is opaque: blending is off while it is drawn.
    pub fn draw(&self, gl: &glow::Context, planes: &PlaneTextures, mirrored: bool) {
        unsafe {
            gl.disable(glow::BLEND);
            gl.use_program(Some(self.program));
            gl.uniform_1_f32(self.mirror.as_ref(), if mirrored { 1.0 } else { 0.0 });
            for (unit, texture) in planes.textures.iter().enumerate() {
                gl.active_texture(glow::TEXTURE0 + unit as u32);
                gl.bind_texture(glow::TEXTURE_2D, Some(*texture));
            }
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
            for unit in (0..3).rev() {
                gl.active_texture(glow::TEXTURE0 + unit);
                gl.bind_texture(glow::TEXTURE_2D, None);
            }
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

/// One picture's Y, U and V textures, reused from picture to picture and
/// reallocated only when the size changes.
#[derive(Debug)]
pub struct PlaneTextures {
    textures: [glow::Texture; 3],
    size: Option<(u32, u32)>,
}

impl PlaneTextures {
    /// Three empty textures.
    pub fn new(gl: &glow::Context) -> Result<PlaneTextures, String> {
        let mut textures = Vec::with_capacity(3);
        for _ in 0..3 {
            match unsafe { gl.create_texture() } {
                Ok(texture) => textures.push(texture),
                Err(err) => {
                    for texture in textures {
                        unsafe { gl.delete_texture(texture) };
                    }
                    return Err(err);
                }
            }
        }
        let textures = [textures[0], textures[1], textures[2]];
        for texture in textures {
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
            }
        }
        unsafe { gl.bind_texture(glow::TEXTURE_2D, None) };
        Ok(PlaneTextures {
            textures,
            size: None,
        })
    }

    /// Copies `frame`'s planes into the textures (one copy each, by the driver).
    pub fn upload(&mut self, gl: &glow::Context, program: &YuvProgram, frame: &VideoFrame) {
        let (width, height) = (frame.width(), frame.height());
        let chroma = (width.div_ceil(2), height.div_ceil(2));
        let reallocate = self.size != Some((width, height));
        let (y, u, v) = frame.planes();
        let (internal, format) = program.channel;
        unsafe {
            gl.pixel_store_i32(glow::UNPACK_ALIGNMENT, 1);
            for (texture, (w, h), plane) in [
                (self.textures[0], (width, height), y),
                (self.textures[1], chroma, u),
                (self.textures[2], chroma, v),
            ] {
                gl.bind_texture(glow::TEXTURE_2D, Some(texture));
                let pixels = glow::PixelUnpackData::Slice(Some(plane));
                if reallocate {
                    gl.tex_image_2d(
                        glow::TEXTURE_2D,
                        0,
                        internal,
                        w as i32,
                        h as i32,
                        0,
                        format,
                        glow::UNSIGNED_BYTE,
                        pixels,
                    );
                } else {
                    gl.tex_sub_image_2d(
                        glow::TEXTURE_2D,
                        0,
                        0,
                        0,
                        w as i32,
                        h as i32,
                        format,
                        glow::UNSIGNED_BYTE,
                        pixels,
                    );
                }
            }
            gl.bind_texture(glow::TEXTURE_2D, None);
            gl.pixel_store_i32(glow::UNPACK_ALIGNMENT, 4);
        }
        self.size = Some((width, height));
    }

    /// Whether a picture was uploaded (there is something to draw).
    pub fn filled(&self) -> bool {
        self.size.is_some()
    }

    /// Frees the textures.
    pub fn destroy(self, gl: &glow::Context) {
        for texture in self.textures {
            unsafe { gl.delete_texture(texture) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
