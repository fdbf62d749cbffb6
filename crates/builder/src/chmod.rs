//! `--chmod` modes: octal (`0755`) or symbolic (`u+x,go-w`, as chmod(1) reads them).

/// Applies a symbolic mode to `mode` (permission bits plus setuid/setgid/sticky). `is_dir`
/// matters for `X` (execute only for directories or already-executable files).
pub fn apply_symbolic(spec: &str, mode: u32, is_dir: bool) -> Option<u32> {
    let mut mode = mode & 0o7777;
    for clause in spec.split(',') {
        let op_at = clause.find(['+', '-', '='])?;
        let (who, rest) = clause.split_at(op_at);
        let mut who_mask = 0;
        for c in who.chars() {
            who_mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return None,
            };
        }
        if who_mask == 0 {
            who_mask = 0o7777;
        }
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            let mut bits = 0;
            while let Some(&c) = chars.peek() {
                if matches!(c, '+' | '-' | '=') {
                    break;
                }
                chars.next();
                bits |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    'X' => 0,
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => return None,
                };
            }
            let bits = bits & who_mask;
            mode = match op {
                '+' => mode | bits,
                '-' => mode & !bits,
                '=' => (mode & !(who_mask & 0o777)) | bits,
                _ => return None,
            };
        }
    }
    Some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_modes() {
        assert_eq!(apply_symbolic("u+x", 0o644, false), Some(0o744));
        assert_eq!(apply_symbolic("go-r", 0o644, false), Some(0o600));
        assert_eq!(apply_symbolic("a=r", 0o755, false), Some(0o444));
        assert_eq!(apply_symbolic("+x", 0o644, false), Some(0o755));
        assert_eq!(apply_symbolic("u=rwx,g=rx,o=", 0o600, false), Some(0o750));
        assert_eq!(apply_symbolic("a+X", 0o644, false), Some(0o644));
        assert_eq!(apply_symbolic("a+X", 0o644, true), Some(0o755));
        assert_eq!(apply_symbolic("u+s", 0o755, false), Some(0o4755));
        assert_eq!(apply_symbolic("q+x", 0o644, false), None);
        assert_eq!(apply_symbolic("u", 0o644, false), None);
    }
}
