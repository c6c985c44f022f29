// @ts-check
// Type-aware linting: the rules that need types (floating promises, exhaustive
// switches) are the ones that catch real bugs in an agent made of timers and I/O.
import eslint from '@eslint/js';
import prettier from 'eslint-config-prettier';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    ignores: [
      'dist/',
      'dist-dev/',
      'dist-bench/',
      'node_modules/',
      'coverage/',
      '.demo/',
      // Plain JS: the two Jest configs and the crash test's child process (run by node without a build step).
      '**/*.js',
      '**/*.mjs',
    ],
  },
  eslint.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      // A `default` does not excuse a switch over a union from naming every member; a switch over an open type needs one.
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { requireDefaultForNonUnion: true }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    files: ['src/**/*.ts', 'dev/**/*.ts'],
    ignores: ['src/common/class-validator.ts'],
    rules: {
      // Its index loads every decorator, validator.js and libphonenumber-js (~3 MB of heap): see src/common/class-validator.ts.
      '@typescript-eslint/no-restricted-imports': [
        'error',
        { paths: [{ name: 'class-validator', message: 'import from src/common/class-validator.ts', allowTypeImports: true }] },
      ],
    },
  },
  {
    files: ['**/*.spec.ts', '**/*.e2e-spec.ts'],
    rules: {
      // @types/jest types the asymmetric matchers (expect.any, expect.stringMatching, expect.objectContaining) as `any`.
      '@typescript-eslint/no-unsafe-assignment': 'off',
    },
  },
  prettier,
);
