//! All-pairs gravitational n-body, a few leapfrog-style steps. Each step publishes the bodies'
//! positions as a fresh read-only array; workers take contiguous bands of bodies, sum the pull of
//! every other body in index order, and return their band's new positions and velocities, which the
//! calling thread assembles into the next step's arrays.

use std::sync::Arc;

use super::common::{Fnv, Rng, band};
use crate::par::{Size, spawn, workers};

/// Body count and step count for a size.
fn shape(size: Size) -> (usize, usize) {
    match size {
        Size::Small => (128, 4),
        Size::Medium => (4000, 20),
        Size::Large => (8000, 40),
    }
}

/// Time step.
const DT: f64 = 1e-3;
/// Softening length squared (keeps close encounters finite).
const EPS2: f64 = 1e-4;

/// Runs the simulation with `workers()` threads; the checksum hashes the final positions and
/// velocities in body order.
pub fn run(size: Size) -> u64 {
    let (n, steps) = shape(size);
    let threads = workers().min(n);
    let mut rng = Rng::new(0x6e62);
    let unit = |r: &mut Rng| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    // x, y, z, mass.
    let mut pos: Arc<Vec<[f64; 4]>> = Arc::new(
        (0..n).map(|_| [unit(&mut rng), unit(&mut rng), unit(&mut rng), 0.5 + unit(&mut rng)]).collect(),
    );
    let mut vel: Arc<Vec<[f64; 3]>> = Arc::new(vec![[0.0; 3]; n]);
    for _ in 0..steps {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (pos, vel) = (Arc::clone(&pos), Arc::clone(&vel));
                let bodies = band(n, threads, t);
                spawn(move || {
                    let mut p_out = Vec::with_capacity(bodies.len());
                    let mut v_out = Vec::with_capacity(bodies.len());
                    for i in bodies {
                        let [xi, yi, zi, _] = pos[i];
                        let mut acc = [0.0f64; 3];
                        for (j, &[xj, yj, zj, mj]) in pos.iter().enumerate() {
                            if j == i {
                                continue;
                            }
                            let (dx, dy, dz) = (xj - xi, yj - yi, zj - zi);
                            let d2 = dx * dx + dy * dy + dz * dz + EPS2;
                            let s = mj / (d2 * d2.sqrt());
                            acc[0] += dx * s;
                            acc[1] += dy * s;
                            acc[2] += dz * s;
                        }
                        let v = [vel[i][0] + acc[0] * DT, vel[i][1] + acc[1] * DT, vel[i][2] + acc[2] * DT];
                        p_out.push([xi + v[0] * DT, yi + v[1] * DT, zi + v[2] * DT, pos[i][3]]);
                        v_out.push(v);
                    }
                    (p_out, v_out)
                })
            })
            .collect();
        let mut next_pos = Vec::with_capacity(n);
        let mut next_vel = Vec::with_capacity(n);
        for handle in handles {
            let (p, v) = handle.join();
            next_pos.extend(p);
            next_vel.extend(v);
        }
        pos = Arc::new(next_pos);
        vel = Arc::new(next_vel);
    }
    let mut h = Fnv::new();
    for (p, v) in pos.iter().zip(vel.iter()) {
        for &x in &p[..3] {
            h.float(x, 1e9);
        }
        for &x in v {
            h.float(x, 1e9);
        }
    }
    h.finish()
}
